"""Boutique: a cloud-native microservices reference shop in Python."""

__version__ = "0.1.0"
