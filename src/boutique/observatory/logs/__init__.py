"""The logs signal: decoding OTLP log records, their table in the store and its queries.

Receivers are `receivers.otlp_logs`, the API `api.logs`, the page `ui.logs`.
"""
