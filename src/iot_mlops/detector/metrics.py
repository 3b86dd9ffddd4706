"""Prometheus metrics of the detector.

Labels are bounded sets (reason, partition, model_version, ...). ``device_type`` and
``metric_name`` come from the input, so they pass through ``series_labels``: the first
``IOT_MLOPS_MAX_LABEL_VALUES`` distinct values of each are kept and later ones become
``other`` (the model's metadata does not list the names it was trained on, so there is no
allow-list to take). The per-series gauges (``iot_series_*``) carry ``device_id`` but only for a
capped number of series (``IOT_MLOPS_SERIES_GAUGE_LIMIT``).
"""

from __future__ import annotations

import functools
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
SERIES = ("device_type", "metric_name")
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
OTHER = "other"  # the label value of every device_type / metric_name past the cap


class DetectorMetrics:
    """All the detector's metrics on one registry (a fresh one per detector instance, so
    tests can run several detectors in one process)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, max_label_values: int = 50
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.max_label_values = max_label_values
        self._kept: tuple[set[str], set[str]] = (set(), set())  # device types, metric names
        self._stream(self.registry)
        self._model(self.registry)
        self._quality(self.registry)
        self._monitoring(self.registry)
        self._per_series(self.registry)

    def series_labels(
        self, device_type: str, metric_name: str, readings: int = 0
    ) -> tuple[str, str]:
        """The (device_type, metric_name) labels to use: a value past the first
        ``max_label_values`` of its label is ``other``; ``readings`` it stands for are counted
        in ``iot_metric_labels_folded_total{label}`` when folded."""
        out = []
        for name, value, kept in zip(SERIES, (device_type, metric_name), self._kept, strict=True):
            if value not in kept and len(kept) < self.max_label_values:
                kept.add(value)
            if value in kept:
                out.append(value)
                continue
            out.append(OTHER)
            if readings:
                self.labels_folded.labels(name).inc(readings)
        return out[0], out[1]

    def _stream(self, r: CollectorRegistry) -> None:
        """Readings, anomalies and episode events, scores, label folding and lag."""
        counter = functools.partial(Counter, registry=r)
        # outcome: scored | warming_up | late | duplicate
        self.readings = counter(
            "iot_readings", "Valid readings consumed, by outcome", (*SERIES, "outcome")
        )
        self.anomalies = counter("iot_anomalies", "Anomaly episodes opened (series level)", SERIES)
        self.labels_folded = counter(
            "iot_metric_labels_folded",
            "Readings whose device_type or metric_name label was reported as 'other' (cap)",
            ("label",),
        )
        # level: series | device; event: opened | closed | silent | resumed | expired
        self.episode_events = counter(
            "iot_episode_events", "Episode events published to the anomalies topic",
            ("level", "event"),
        )  # fmt: skip
        self.anomaly_score = Histogram(
            "iot_anomaly_score", "Anomaly score of scored readings", SERIES,
            buckets=SCORE_BUCKETS, registry=r,
        )  # fmt: skip
        self.consumer_lag = Gauge(
            "iot_consumer_lag", "Messages behind the partition's end offset",
            ("topic", "partition"), registry=r,
        )  # fmt: skip
        self._outputs(r)

    def _outputs(self, r: CollectorRegistry) -> None:
        """Dead letters, records refused for good, and the transactions that publish them."""
        counter = functools.partial(Counter, registry=r)
        self.dead_letters = counter(
            "iot_dead_letters", "Malformed messages sent to the DLQ, by reason", ("reason",)
        )
        self.dead_letters_truncated = counter(
            "iot_dead_letter_truncated",
            "Dead letters whose copied value or key was cut to the DLQ bounds, by reason",
            ("reason",),
        )
        # output: anomalies | scores | dlq. A record the broker refuses for good (e.g. too
        # large) is replaced by a minimal dead letter naming it, so its offset can commit.
        self.unpublishable = counter(
            "iot_unpublishable_records",
            "Output records refused for good and replaced by a minimal dead letter",
            ("output",),
        )
        # result: committed | aborted (an aborted batch is redone; nothing of it is counted)
        self.transactions = counter("iot_transactions", "Kafka transactions by result", ("result",))
        self.commit_seconds = Histogram(
            "iot_transaction_commit_duration_seconds",
            "One batch's transaction, begin to committed",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip

    def _model(self, r: CollectorRegistry) -> None:
        """The model: its calls, the latency and series state it implies, its reloads and the
        registry it comes from."""
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
        self.series_tracked = Gauge(
            "iot_series_tracked", "Series with state in this detector", registry=r
        )
        self.series_warming_up = Gauge(
            "iot_series_warming_up", "Series with too little history to be scored", registry=r
        )
        self.series_silent = Gauge(
            "iot_silent_series",
            "Series held that have not reported for IOT_MLOPS_SILENT_AFTER_S of log time",
            registry=r,
        )
        self.partition_changes = Counter(
            "iot_partition_changes",
            "Input partitions assigned to or revoked from this replica (rebalances)",
            ("change",),
            registry=r,
        )
        self.series_expired = Counter(
            "iot_series_expired",
            "Series whose state was dropped after IOT_MLOPS_EXPIRE_AFTER_S without a reading",
            registry=r,
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
        self.model_refused = Counter(
            "iot_model_refused",
            "Model versions refused before loading: artifacts not matching the digest or "
            "signature recorded at registration (lifecycle/integrity.py)",
            registry=r,
        )
        self.registry_reachable = Gauge(
            "iot_registry_reachable", "1 when the last MLflow registry poll succeeded", registry=r
        )

    def _quality(self, r: CollectorRegistry) -> None:
        """Live quality against readings that carry is_anomaly (the simulator's ground truth)."""

        def live(name: str, doc: str) -> Counter:
            return Counter(f"iot_live_{name}", doc, SERIES, registry=r)

        self.true_positives = live("true_positives", "Readings in an episode, labelled anomalous")
        self.false_positives = live("false_positives", "Readings in an episode, labelled normal")
        self.false_negatives = live("false_negatives", "Labelled anomalies outside any episode")

    def _monitoring(self, r: CollectorRegistry) -> None:
        """How well the served model fits live data (issue 15): interval coverage and error
        against what it promised, input drift against its training profile, its age."""
        counter, gauge = (
            functools.partial(Counter, registry=r),
            functools.partial(Gauge, registry=r),
        )
        self.forecast_in_interval = counter(
            "iot_forecast_in_interval",
            "Scored readings inside the forecast interval (÷ scored readings = live coverage)",
            SERIES,
        )
        self.forecast_deviation = counter(
            "iot_forecast_abs_deviation",
            "Sum over scored readings of |value - forecast median| in half-interval units "
            "(÷ scored readings = the mean scaled error)",
            SERIES,
        )
        self.interval_nominal = gauge(
            "iot_model_interval_nominal_coverage",
            "Share of readings the served model's interval should hold (upper - lower quantile)",
        )
        self.target_false_alarm_rate = gauge(
            "iot_model_target_false_alarm_rate",
            "False alarms per scored reading the served model's threshold was calibrated for",
        )
        self._trained_at = 0.0
        self.model_age = gauge(
            "iot_model_age_seconds",
            "Seconds since the served model was trained (0: no model, or not recorded)",
        )
        self.model_age.set_function(
            lambda: time.time() - self._trained_at if self._trained_at else 0.0
        )
        # metric_name: the profiled metrics (model/profile.py caps them); bin: 0-9
        self.input_value_bins = counter(
            "iot_input_value_bin",
            "Scored readings per decile bin of the model's training values",
            ("metric_name", "bin"),
        )
        self.training_bin_share = gauge(
            "iot_training_value_bin_share",
            "Share of the served model's training values in each decile bin",
            ("metric_name", "bin"),
        )

    def show_model(self, model: object) -> None:
        """The served model's promises and profile, for comparing live data with them."""
        cal = getattr(model, "calibration", None)
        if cal is not None:
            self.interval_nominal.set(cal.upper_quantile - cal.lower_quantile)
            self.target_false_alarm_rate.set(cal.target_false_alarm_rate)
        data = getattr(getattr(model, "metadata", None), "data", None) or {}
        self._trained_at = float(data.get("trained_at") or 0)
        # Live counts restart with the new model's bins; every bin is exported from the start
        # (at 0), so a bin live data never reaches still counts in the PSI.
        self.training_bin_share.clear()
        self.input_value_bins.clear()
        for metric, prof in (data.get("profile") or {}).items():
            for b, share in enumerate(prof["shares"]):
                self.training_bin_share.labels(metric, str(b)).set(share)
                self.input_value_bins.labels(metric, str(b))

    def _per_series(self, r: CollectorRegistry) -> None:
        """Latest values of at most ``IOT_MLOPS_SERIES_GAUGE_LIMIT`` series."""

        def latest(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, ("device_id", "metric_name"), registry=r)

        self.series_actual = latest("iot_series_actual_value", "Latest value")
        self.series_predicted = latest(
            "iot_series_predicted_value", "Forecast median for the latest value"
        )
        self.series_lower = latest("iot_series_lower", "Forecast interval lower bound")
        self.series_upper = latest("iot_series_upper", "Forecast interval upper bound")
        self.series_score = latest("iot_series_anomaly_score", "Latest anomaly score")
