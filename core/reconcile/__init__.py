"""Level-driven reconcilers: specs, per-key rate-limited queues and the runner."""
