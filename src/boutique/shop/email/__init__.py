"""email: renders order confirmations and "sends" them (a log line, an in-memory outbox, optional files)."""
