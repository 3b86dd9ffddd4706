"""Device clock faults (issue 13, item 2), injected for real on the broker.

One valid reading dated 2199 set its series' last time to 2199: every later real reading of
the series was "late" and skipped, and a restart rebuilt the same state from the log. A
clock gone far back did the same while it stayed behind. Both are now dead-lettered
(``clock_skew``) when their event time is too far from the record's Kafka timestamp, on the
live path and in the rebuild; a reading only a little late is counted as ``late``.
"""

from __future__ import annotations

import time

from confluent_kafka import Producer
from detector_helpers import ProductionModel, RunningDetector, caught_up, read_all, wait_until
from reliability_helpers import stream

from iot_mlops.config import Settings
from iot_mlops.events import Reading, decode_reading, encode_reading

DAY_MS = 86_400_000
YEAR_2199_MS = 7_226_582_400_000  # 2199-01-01


def _produce(s: Settings, msgs: list[tuple[bytes, bytes]]) -> None:
    p = Producer({**s.kafka_common(), "enable.idempotence": True, "linger.ms": 5})
    for key, value in msgs:
        p.produce(s.input_topic, value, key=key)  # record timestamp: now
    assert p.flush(60) == 0


def _readings(det: RunningDetector, outcome: str) -> float:
    return sum(
        smp.value
        for fam in det.detector.metrics.registry.collect()
        if fam.name == "iot_readings"
        for smp in fam.samples
        if smp.name == "iot_readings_total" and smp.labels["outcome"] == outcome
    )


def _run(s: Settings) -> RunningDetector:
    det = RunningDetector(s)
    try:
        wait_until(lambda: det.error is not None or caught_up(s), 300, "input consumed")
    finally:
        det.stop()
    return det


def _at(r: Reading, ts_ms: int, value: float | None = None) -> tuple[bytes, bytes]:
    v = r.metric_value if value is None else value
    faulty = Reading(r.device_id, r.device_type, r.metric_name, v, ts_ms, r.is_anomaly)
    return r.device_id.encode(), encode_reading(faulty)


def test_readings_from_far_future_or_past_are_dead_lettered_and_the_series_keeps_scoring(
    det_settings: Settings, production_model: ProductionModel
) -> None:
    msgs = stream(production_model, -200, 300)  # 15 series x 300 steps
    n_series = 15
    first = decode_reading(msgs[0][1])
    # The stream's event times are days behind now (its record timestamps): the "behind"
    # bound is set just past its oldest reading, so a clock a year back is out of it.
    age_ms = int(time.time() * 1000) - first.timestamp_ms
    s = det_settings.model_copy(update={"event_time_max_behind_s": (age_ms + 2 * DAY_MS) / 1000})
    ours = [decode_reading(v) for _k, v in msgs if decode_reading(v).series_id == first.series_id]
    cut = 150 * n_series
    faults = [
        _at(first, YEAR_2199_MS),  # a clock far ahead
        _at(first, first.timestamp_ms - 365 * DAY_MS),  # a clock a year back
        _at(ours[100], ours[100].timestamp_ms, 1.0),  # a little late: counted, not refused
    ]
    _produce(s, msgs[:cut] + faults + msgs[cut:])
    det = _run(s)

    dlq = read_all(s, s.dlq_topic, timeout=60)
    assert [dict(m.headers())["reason"] for m in dlq] == [b"clock_skew", b"clock_skew"]
    assert det.metric("iot_dead_letters_total", reason="clock_skew") == 2
    # Before the fix the reading of 2199 made each later reading of its series late (~150).
    assert _readings(det, "late") == 1
    assert _readings(det, "scored") > 0.8 * len(msgs)

    # A restart rebuilds the state from the log, which holds the faulty readings: they must
    # not reach the state there either.
    more = stream(production_model, 100, 20)
    _produce(s, more)
    det2 = _run(s)
    assert _readings(det2, "late") == 0
    assert _readings(det2, "scored") == len(more)
