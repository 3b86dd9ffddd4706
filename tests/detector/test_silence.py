"""Silent sensors and expiry through the detector's batch step and its state replay (the real
engine with the numpy stand-in model, no Kafka), and the bounded metric labels."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from stand_ins import LastValueModel

from iot_mlops.config import Settings
from iot_mlops.detector import restore
from iot_mlops.detector.batch import Incoming, apply_committed, process_batch
from iot_mlops.detector.metrics import OTHER, DetectorMetrics
from iot_mlops.events import Reading, encode_reading
from iot_mlops.scoring.engine import Engine
from iot_mlops.scoring.liveness import LivenessConfig

pytestmark = pytest.mark.unit

TOPIC = "in"
STEP = 60_000
T0 = 1_795_665_600_000
OWNED = {(TOPIC, 0)}
SETTINGS = Settings().with_overrides(model_name="M", model_alias="production")


def new_engine() -> Engine:
    # Silent after 5 minutes of log time, expired after 15 (the model's grid is 1 minute).
    return Engine(LastValueModel(), min_history=3, liveness=LivenessConfig(300, 900))


def stream(devices: dict[str, range], steps: int) -> list[Incoming]:
    """Each device's readings at the steps of its range; record time = reading time + 2 s."""
    out = []
    for t in range(steps):
        for d, live in devices.items():
            if t in live:
                r = Reading(d, "pump", "temperature", 10.0 + 0.1 * (t % 3), T0 + t * STEP)
                out.append(Incoming(TOPIC, 0, len(out), d.encode(), encode_reading(r),
                                    r.timestamp_ms + 2000))  # fmt: skip
    return out


# "a" stops at step 9, is silent from 14, back at 20; stops again at 29, expires at 44 and
# returns at 50 as a new series. "b" keeps the partition's log moving.
DEVICES = {"a": [*range(0, 10), *range(20, 30), *range(50, 60)], "b": range(60)}


def events(engine: Engine, msgs: list[Incoming], cut: int) -> list[dict]:
    """The silence events of ``msgs`` processed in batches of ``cut``."""
    out = []
    for i in range(0, len(msgs), cut):
        res = process_batch(msgs[i : i + cut], engine, SETTINGS, OWNED, clock=lambda: 1.0)
        out += [orjson.loads(v) for _k, v in res.anomalies]
    return [e for e in out if e["event"] in ("silent", "resumed", "expired")]


def key(e: dict) -> tuple[str, str]:
    return (e["episode_id"], e["event"])


def test_silent_resumed_and_expired_events_carry_the_series_and_are_counted() -> None:
    eng = new_engine()
    msgs = stream(DEVICES, 60)
    out = [process_batch(msgs[i : i + 9], eng, SETTINGS, OWNED) for i in range(0, 120, 9)]
    evs = [orjson.loads(v) for o in out for _k, v in o.anomalies]
    assert [(e["event"], e["device_id"]) for e in evs] == [
        ("silent", "a"), ("resumed", "a"), ("silent", "a"), ("expired", "a"),
    ]  # fmt: skip
    silent, resumed, silent2, expired = evs
    assert silent["episode_id"] == resumed["episode_id"] == f"a/temperature@silent@{T0 + 9 * STEP}"
    assert silent2["episode_id"] == expired["episode_id"] != silent["episode_id"]
    assert silent["level"] == "series" and silent["device_type"] == "pump"
    assert silent["metric_name"] == "temperature" and silent["model_name"] == "M"
    assert silent["model_version"] == "7" and silent["model_alias"] == "production"
    assert silent["last_reading_at"] == "2026-11-26T04:09:00.000Z"
    # Started on the log's clock: the last record time (+2 s) plus the 300 s.
    assert silent["started_at"] == "2026-11-26T04:14:02.000Z" and silent["ended_at"] is None
    assert silent["silent_after_s"] == 300.0 and silent["reason"] is None
    assert resumed["resumed_at"] == "2026-11-26T04:20:00.000Z" and resumed["reason"] == "reported"
    assert expired["reason"] == "expired" and expired["ended_at"] == "2026-11-26T04:44:02.000Z"
    assert sum(o.deltas.episode_events[("series", "silent")] for o in out) == 2
    assert sum(o.deltas.expired for o in out) == 1
    # Found expired at its return (same batch): held again, warming up, not to be forgotten.
    assert not any(o.expired for o in out) and "a/temperature" in eng.series


def test_a_series_that_never_returns_is_dropped_by_the_sweep() -> None:
    eng = new_engine()
    msgs = stream({"a": range(10), "b": range(60)}, 60)
    out = [process_batch(msgs[i : i + 9], eng, SETTINGS, OWNED) for i in range(0, 70, 9)]
    assert set().union(*(o.expired for o in out)) == {"a/temperature"}
    assert list(eng.series) == ["b/temperature"] and list(eng.devices) == ["b"]


def test_a_rebuilt_owner_neither_repeats_nor_loses_silence_events() -> None:
    """The old owner commits up to offset ``cut``; the new one replays that log (as
    ``restore.rebuild`` does) and goes on: together they publish what one owner would."""
    msgs = stream(DEVICES, 60)
    reference = Counter(key(e) for e in events(new_engine(), msgs, cut=7))
    assert len(reference) == 4
    for cut in (16, 30, 45, 70, 95):  # a silent, back, silent again, expired, back
        before = events(new_engine(), msgs[:cut], cut=7)
        successor = new_engine()
        history = [(_reading(m), (m.partition, m.timestamp_ms)) for m in msgs[:cut]]
        restore.replay(successor, history, SETTINGS.rebuild_scale_points)
        after = events(successor, msgs[cut:], cut=7)
        assert Counter(key(e) for e in before + after) == reference, f"cut at {cut}"


def _reading(m: Incoming) -> Reading:
    from iot_mlops.events import decode_reading

    return decode_reading(m.value)


def test_a_thousand_device_types_give_at_most_cap_plus_one_label_values() -> None:
    cap = 20
    msgs = []
    for i in range(1000):
        r = Reading(f"d{i}", f"type-{i:04d}", "temperature", 1.0, T0)
        msgs.append(Incoming(TOPIC, 0, i, b"k", encode_reading(r), T0))
    out = process_batch(msgs, new_engine(), SETTINGS, OWNED)
    m = DetectorMetrics(max_label_values=cap)
    apply_committed(out.deltas, m, done_ms=T0)
    types = {
        s.labels["device_type"]
        for metric in m.registry.collect()
        for s in metric.samples
        if "device_type" in s.labels
    }
    assert len(types) == cap + 1 and OTHER in types
    sample = m.registry.get_sample_value
    assert sample("iot_metric_labels_folded_total", {"label": "device_type"}) == 1000 - cap
    assert sample("iot_metric_labels_folded_total", {"label": "metric_name"}) is None
    other = {"device_type": OTHER, "metric_name": "temperature", "outcome": "warming_up"}
    assert sample("iot_readings_total", other) == 1000 - cap
