"""OTLP helpers shared by receivers and query APIs: a header-only schema and attribute values."""
