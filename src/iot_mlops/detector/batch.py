"""The detector's batch step: consumed messages in, records to publish and metric deltas out.

Pure apart from the engine it drives: no Kafka objects (the runner hands over plain
``Incoming`` values), no metrics registry (the runner applies the ``MetricDeltas``). What one
published record looks like is decided in ``detector/records.py``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from iot_mlops.config import Settings
from iot_mlops.detector.metrics import DetectorMetrics
from iot_mlops.detector.records import (
    ModelStamp,
    Record,
    episode_records,
    score_record,
    silence_record,
)
from iot_mlops.events import Reading, ReadingError, check_event_time, decode_reading
from iot_mlops.model import profile
from iot_mlops.scoring.engine import Engine, Result
from iot_mlops.scoring.liveness import Silence

log = logging.getLogger("iot_mlops.detector")

Partition = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class Incoming:
    """One consumed message, as plain values."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int  # the Kafka timestamp; <= 0 when the message has none


@dataclass(frozen=True)
class DeadLetter:
    """A refused message as it goes to the DLQ: its value and key cut to the settings'
    bounds, so that a copy of a huge input still fits the broker's message limit."""

    message: Incoming
    error: ReadingError
    value: bytes | None
    key: bytes | None

    @classmethod
    def of(cls, msg: Incoming, error: ReadingError, settings: Settings) -> DeadLetter:
        value = _cut(msg.value, settings.dlq_max_value_bytes)
        return cls(msg, error, value, _cut(msg.key, settings.dlq_max_key_bytes))

    @property
    def truncated(self) -> bool:
        m = self.message
        return _size(self.value) < _size(m.value) or _size(self.key) < _size(m.key)

    def headers(self) -> list[tuple[str, bytes]]:
        m, e = self.message, self.error
        headers = [
            ("reason", e.reason.encode()),
            ("detail", e.detail[:500].encode("utf-8", "replace")),
            ("source.topic", m.topic.encode()),
            ("source.partition", str(m.partition).encode()),
            ("source.offset", str(m.offset).encode()),
        ]
        if self.truncated:
            headers += [
                ("truncated", b"true"),
                ("original.value.size", str(_size(m.value)).encode()),
                ("original.key.size", str(_size(m.key)).encode()),
            ]
        return headers


def _cut(data: bytes | None, limit: int) -> bytes | None:
    return data if data is None or len(data) <= limit else data[:limit]


def _size(data: bytes | None) -> int:
    return 0 if data is None else len(data)


@dataclass(frozen=True)
class SeriesGauge:
    series_id: str
    device_id: str
    metric_name: str
    actual: float
    predicted: float
    lower: float
    upper: float
    score: float


@dataclass
class MetricDeltas:
    """What the batch changes in the metrics. Counts and histograms are applied only once the
    batch's transaction is committed (``apply_committed``), so a batch that aborts and is
    redone is counted once; only the latest-value gauges are set before (``apply_observed``)."""

    scores: list[tuple[str, str, float]] = field(default_factory=list)  # (type, metric, score)
    true_positives: Tally[tuple[str, str]] = field(default_factory=Tally)
    false_positives: Tally[tuple[str, str]] = field(default_factory=Tally)
    false_negatives: Tally[tuple[str, str]] = field(default_factory=Tally)
    # The latest gauge values per series id (first-seen order): only the last reading of a
    # series in a batch is shown, so setting five gauges once per reading would be waste.
    series: dict[str, SeriesGauge] = field(default_factory=dict)
    outcomes: Tally[tuple[str, str, str]] = field(default_factory=Tally)
    anomalies: Tally[tuple[str, str]] = field(default_factory=Tally)
    episode_events: Tally[tuple[str, str]] = field(default_factory=Tally)  # (level, event)
    dead_letters: Tally[str] = field(default_factory=Tally)
    dead_letters_truncated: Tally[str] = field(default_factory=Tally)  # by reason
    expired: int = 0  # series whose state was dropped
    stamps_ms: list[int] = field(default_factory=list)  # Kafka timestamps of the messages
    # Model monitoring: interval coverage and deviation per (type, metric), and the scored
    # values per (metric, bin) of the model's training profile (input drift).
    in_interval: Tally[tuple[str, str]] = field(default_factory=Tally)
    deviation_sum: dict[tuple[str, str], float] = field(default_factory=dict)
    profile_bins: Tally[tuple[str, int]] = field(default_factory=Tally)


@dataclass
class BatchOutput:
    anomalies: list[Record] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    scores: list[Record] = field(default_factory=list)
    offsets: dict[Partition, int] = field(default_factory=dict)  # next offset to consume
    series: dict[Partition, set[str]] = field(default_factory=dict)  # series seen per partition
    expired: set[str] = field(default_factory=set)  # series dropped (idle too long)
    deltas: MetricDeltas = field(default_factory=MetricDeltas)


@dataclass
class _Decoded:
    readings: list[Reading] = field(default_factory=list)
    sources: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset)
    times: list[tuple[int, int]] = field(default_factory=list)  # (partition, log time ms)


def process_batch(
    messages: Iterable[Incoming],
    engine: Engine,
    settings: Settings,
    owned: set[Partition],
    clock: Callable[[], float] = time.time,
) -> BatchOutput:
    """Decode, score and build the batch's records. Messages of partitions not in ``owned``
    (revoked while they were fetched) are skipped: their new owner scores them."""
    out = BatchOutput()
    decoded = _decode(messages, settings, owned, out)
    results = engine.process(decoded.readings, times=decoded.times)
    if settings.scores_topic:
        out.scores = [
            (res.reading.device_id.encode(), score_record(res, src))
            for res, src in zip(results, decoded.sources, strict=True)
        ]
    stamp = ModelStamp(
        settings.model_name, settings.model_alias, engine.version, int(clock() * 1000)
    )
    for res in results:
        out.anomalies.extend(episode_records(res, stamp))
        out.anomalies.extend(silence_record(ev, stamp, engine.silent_ms) for ev in res.liveness)
    _sweep(engine, stamp, out)
    for _key, value in out.anomalies:
        ev = orjson.loads(value)
        out.deltas.episode_events[(ev["level"], ev["event"])] += 1
    # Expired at the sweep, or found expired at the series' next reading (then it restarts).
    out.deltas.expired = out.deltas.episode_events[("series", Silence.EXPIRED.value)]
    _count(results, out)
    _monitor(results, out.deltas, _profile_edges(engine))
    return out


def _sweep(engine: Engine, stamp: ModelStamp, out: BatchOutput) -> None:
    """The series the batch's log time left silent or expired; the runner forgets the expired
    ones. (Silence found at a series' next reading is in that reading's result.)"""
    found = engine.sweep()
    out.anomalies.extend(silence_record(ev, stamp, engine.silent_ms) for ev in found)
    out.expired = {ev.series_id for ev in found if ev.kind is Silence.EXPIRED}


def _decode(
    messages: Iterable[Incoming], settings: Settings, owned: set[Partition], out: BatchOutput
) -> _Decoded:
    decoded = _Decoded()
    stale = 0
    bounds = event_time_bounds_ms(settings)
    for msg in messages:
        key = (msg.topic, msg.partition)
        if key not in owned:
            # Fetched before the partition was revoked inside this consume() call: its
            # series' state is gone and its new owner resumes from the committed offset.
            # Scoring it here would score it from scratch (no history, so missed
            # anomalies) and commit offsets for a partition this replica no longer owns.
            stale += 1
            continue
        out.offsets[key] = msg.offset + 1
        out.deltas.stamps_ms.append(msg.timestamp_ms)
        try:
            r = decode_reading(msg.value, settings.max_message_bytes)
            check_event_time(r, msg.timestamp_ms, *bounds)
        except ReadingError as e:
            dl = DeadLetter.of(msg, e, settings)
            out.dead_letters.append(dl)
            out.deltas.dead_letters[e.reason] += 1
            if dl.truncated:
                out.deltas.dead_letters_truncated[e.reason] += 1
            continue
        decoded.readings.append(r)
        decoded.sources.append((msg.partition, msg.offset))
        decoded.times.append((msg.partition, log_time_ms(msg.timestamp_ms, r)))
        out.series.setdefault(key, set()).add(r.series_id)
    if stale:
        log.info("skipped %d message(s) of partitions revoked meanwhile", stale)
    return decoded


def log_time_ms(record_ms: int, reading: Reading) -> int:
    """Where a reading is on its partition's log clock (liveness): the record timestamp, or
    the event time for a record without one."""
    return record_ms if record_ms > 0 else reading.timestamp_ms


def event_time_bounds_ms(settings: Settings) -> tuple[int, int]:
    """(max ahead, max behind) of a reading's event time against its record timestamp."""
    return (
        round(settings.event_time_max_ahead_s * 1000),
        round(settings.event_time_max_behind_s * 1000),
    )


def _count(results: list[Result], out: BatchOutput) -> None:
    d = out.deltas
    for res in results:
        r, sc = res.reading, res.scored
        series = (r.device_type, r.metric_name)
        d.outcomes[(*series, res.outcome.value)] += 1
        if sc is None:
            continue
        d.scores.append((*series, sc.score))
        if r.is_anomaly is not None:
            # Per reading, "in an episode" against the label (SKAB's per-row view): an episode
            # covers the departure, not only its onset.
            if sc.in_episode and r.is_anomaly:
                d.true_positives[series] += 1
            elif sc.in_episode:
                d.false_positives[series] += 1
            elif r.is_anomaly:
                d.false_negatives[series] += 1
        gauge = SeriesGauge(
            r.series_id, r.device_id, r.metric_name, r.metric_value,
            sc.predicted, sc.lower, sc.upper, sc.score,
        )  # fmt: skip
        d.series[r.series_id] = gauge
        if sc.alarm:
            d.anomalies[series] += 1


def _profile_edges(engine: Engine) -> dict[str, list[float]]:
    """The bin edges of each metric in the served model's training profile (none for a model
    trained before profiles were stored)."""
    meta = getattr(getattr(engine, "model", None), "metadata", None)
    prof = (getattr(meta, "data", None) or {}).get("profile") or {}
    return {m: p["edges"] for m, p in prof.items()}


def _monitor(results: list[Result], d: MetricDeltas, edges: dict[str, list[float]]) -> None:
    for res in results:
        sc = res.scored
        if sc is None:
            continue
        r = res.reading
        series = (r.device_type, r.metric_name)
        if sc.lower <= r.metric_value <= sc.upper:
            d.in_interval[series] += 1
        if math.isfinite(sc.deviation):
            d.deviation_sum[series] = d.deviation_sum.get(series, 0.0) + sc.deviation
        metric = profile.metric_of(r.series_id)
        e = edges.get(metric)
        if e is not None:
            d.profile_bins[(metric, profile.bin_of(e, r.metric_value))] += 1


# --- applying the deltas ------------------------------------------------------------------


class SeriesGauges:
    """The per-series gauges, for at most ``limit`` series (the first ones seen)."""

    def __init__(self, metrics: DetectorMetrics, limit: int) -> None:
        self.metrics, self.limit = metrics, limit
        self.shown: set[str] = set()

    def set(self, g: SeriesGauge) -> None:
        if g.series_id not in self.shown:
            if len(self.shown) >= self.limit:
                return
            self.shown.add(g.series_id)
        m, labels = self.metrics, (g.device_id, g.metric_name)
        m.series_actual.labels(*labels).set(g.actual)
        m.series_predicted.labels(*labels).set(g.predicted)
        m.series_lower.labels(*labels).set(g.lower)
        m.series_upper.labels(*labels).set(g.upper)
        m.series_score.labels(*labels).set(g.score)


def apply_observed(d: MetricDeltas, m: DetectorMetrics, gauges: SeriesGauges) -> None:
    """Before the commit: the latest-value gauges only (setting them again is harmless)."""
    for g in d.series.values():
        gauges.set(g)


def apply_committed(d: MetricDeltas, m: DetectorMetrics, done_ms: float) -> None:
    """Once the batch's transaction is committed: every count and histogram."""
    # Readings first: they decide which label values are kept and count the folded ones.
    for (dtype, metric, outcome), n in d.outcomes.items():
        m.readings.labels(*m.series_labels(dtype, metric, readings=n), outcome).inc(n)
    children: dict[tuple[str, str], Any] = {}
    for dtype, metric, score in d.scores:
        # One label lookup per (type, metric) and batch, not per reading.
        child = children.get((dtype, metric))
        if child is None:
            child = children[(dtype, metric)] = m.anomaly_score.labels(
                *m.series_labels(dtype, metric)
            )
        child.observe(score)
    for tally, counter in (
        (d.true_positives, m.true_positives),
        (d.false_positives, m.false_positives),
        (d.false_negatives, m.false_negatives),
        (d.anomalies, m.anomalies),
    ):
        for (dtype, metric), n in tally.items():
            counter.labels(*m.series_labels(dtype, metric)).inc(n)
    for labels, n in d.episode_events.items():
        m.episode_events.labels(*labels).inc(n)
    for series, n in d.in_interval.items():
        m.forecast_in_interval.labels(*m.series_labels(*series)).inc(n)
    for series, total in d.deviation_sum.items():
        m.forecast_deviation.labels(*m.series_labels(*series)).inc(total)
    for (metric, b), n in d.profile_bins.items():
        m.input_value_bins.labels(metric, str(b)).inc(n)
    if d.expired:
        m.series_expired.inc(d.expired)
    for reason, n in d.dead_letters.items():
        m.dead_letters.labels(reason).inc(n)
    for reason, n in d.dead_letters_truncated.items():
        m.dead_letters_truncated.labels(reason).inc(n)
    for ts in d.stamps_ms:
        if ts > 0:
            m.detection_latency.observe(max(0.0, (done_ms - ts) / 1000))
