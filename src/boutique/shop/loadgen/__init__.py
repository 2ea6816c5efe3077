"""loadgen: simulated shoppers against the frontend (Locust, headless, in a child process)."""
