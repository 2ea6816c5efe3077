"""The metrics signal: OTLP metrics in, stored beside spans, queried by the API and shown by the UI."""
