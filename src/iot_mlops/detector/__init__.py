"""The streaming anomaly detector: runner, per-series state, metrics."""
