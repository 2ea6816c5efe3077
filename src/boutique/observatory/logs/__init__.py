"""The logs signal: OTLP logs in, stored beside spans, queried by the API and shown by the UI."""
