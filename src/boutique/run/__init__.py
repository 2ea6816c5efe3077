"""boutique.run: local orchestration for `boutique up` (processes, ports, readiness, restarts)."""
