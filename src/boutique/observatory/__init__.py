"""boutique.observatory: the built-in telemetry backend (receive, store, query, show)."""
