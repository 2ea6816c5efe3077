"""Receivers: each turns one wire format into a `SpanBatch` (adding a protocol is adding a module)."""
