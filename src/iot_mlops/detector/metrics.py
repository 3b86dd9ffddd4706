"""Prometheus metrics of the detector.

Labels are bounded sets (device_type, metric_name, reason, partition, model_version); the
per-series gauges (``iot_series_*``) carry ``device_id`` but only for a capped number of
series (``IOT_MLOPS_SERIES_GAUGE_LIMIT``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


class DetectorMetrics:
    """All the detector's metrics on one registry (a fresh one per detector instance, so
    tests can run several detectors in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        series = ("device_type", "metric_name")
        # outcome: scored | warming_up | late | duplicate
        self.readings = Counter(
            "iot_readings", "Valid readings consumed, by outcome", (*series, "outcome"), registry=r
        )
        self.anomalies = Counter("iot_anomalies", "Anomalies published", series, registry=r)
        self.dead_letters = Counter(
            "iot_dead_letters",
            "Malformed messages sent to the DLQ, by reason",
            ("reason",),
            registry=r,
        )
        self.anomaly_score = Histogram(
            "iot_anomaly_score",
            "Anomaly score of scored readings",
            series,
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.forecast_batch_size = Histogram(
            "iot_forecast_batch_size",
            "Series forecast per model call",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.model_call_seconds = Histogram(
            "iot_model_call_duration_seconds", "Duration of one batched model call",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.detection_latency = Histogram(
            "iot_detection_latency_seconds",
            "Reading's Kafka timestamp to its batch's transaction committed",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.consumer_lag = Gauge(
            "iot_consumer_lag",
            "Messages behind the partition's end offset",
            ("topic", "partition"),
            registry=r,
        )
        self.series_tracked = Gauge(
            "iot_series_tracked", "Series with state in this detector", registry=r
        )
        self.series_warming_up = Gauge(
            "iot_series_warming_up", "Series with too little history to be scored", registry=r
        )
        self.model_info = Gauge(
            "iot_model_info",
            "Model in use (value 1)",
            ("model_name", "model_version", "model_alias"),
            registry=r,
        )
        self.model_loaded = Gauge("iot_model_loaded", "1 when a model is loaded", registry=r)
        self.model_reloads = Counter(
            "iot_model_reloads", "Model (re)loads by result", ("result",), registry=r
        )
        self.registry_reachable = Gauge(
            "iot_registry_reachable", "1 when the last MLflow registry poll succeeded", registry=r
        )
        self.transactions = Counter(
            "iot_transactions", "Kafka transactions by result", ("result",), registry=r
        )
        # Live quality against readings that carry is_anomaly (ground truth from the simulator).
        self.true_positives = Counter(
            "iot_live_true_positives", "Flagged readings labelled anomalous", series, registry=r
        )
        self.false_positives = Counter(
            "iot_live_false_positives", "Flagged readings labelled normal", series, registry=r
        )
        self.false_negatives = Counter(
            "iot_live_false_negatives", "Labelled anomalies not flagged", series, registry=r
        )
        per_series = ("device_id", "metric_name")
        self.series_actual = Gauge(
            "iot_series_actual_value", "Latest value", per_series, registry=r
        )
        self.series_predicted = Gauge(
            "iot_series_predicted_value",
            "Forecast median for the latest value",
            per_series,
            registry=r,
        )
        self.series_lower = Gauge(
            "iot_series_lower", "Forecast interval lower bound", per_series, registry=r
        )
        self.series_upper = Gauge(
            "iot_series_upper", "Forecast interval upper bound", per_series, registry=r
        )
        self.series_score = Gauge(
            "iot_series_anomaly_score", "Latest anomaly score", per_series, registry=r
        )
