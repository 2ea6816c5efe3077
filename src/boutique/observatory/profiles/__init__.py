"""Profiles in the observatory: stack samples from every process, stored beside spans and linked to them."""
