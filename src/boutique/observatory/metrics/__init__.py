"""The metrics signal: decoding OTLP metric points, their tables in the store and their queries.

Receivers are `receivers.otlp_metrics`, the API `api.metrics`, the page `ui.metrics`.
"""
