"""The detector service: consume readings from Kafka, score them with the scoring engine, and
write anomalies, dead letters and the consumed offsets in one transaction per batch; plus its
Prometheus metrics, the ``/metrics`` and ``/healthz`` endpoints, the model watcher and the
entry point ``iot-mlops detect`` runs.
"""
