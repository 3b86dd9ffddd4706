"""The detector's batch step as a pure function, driven by a fake engine (no Kafka)."""

from __future__ import annotations

import orjson
import pytest

from iot_mlops.config import Settings
from iot_mlops.detector.batch import (
    Incoming,
    SeriesGauges,
    apply_committed,
    apply_observed,
    process_batch,
)
from iot_mlops.detector.metrics import DetectorMetrics
from iot_mlops.detector.records import ModelStamp, episode_records
from iot_mlops.events import Reading, encode_reading
from iot_mlops.scoring.engine import Result
from iot_mlops.scoring.episodes import Change, EpisodeSummary, Onset
from iot_mlops.scoring.state import Outcome, Scored

pytestmark = pytest.mark.unit

TOPIC = "in"
T0 = 1_795_665_600_000


class FakeEngine:
    """Scores a reading as an alarm (an episode's onset) when its value is over 100; the
    first reading of a series only warms up. Records what it was given."""

    version = "3"
    silent_ms = 600_000

    def __init__(self) -> None:
        self.series: dict[str, int] = {}
        self.calls: list[list[Reading]] = []

    def sweep(self) -> list:
        return []

    def process(self, readings: list[Reading], times: object = None) -> list[Result]:
        self.calls.append(list(readings))
        out = []
        for r in readings:
            seen = self.series.get(r.series_id, 0)
            self.series[r.series_id] = seen + 1
            if seen == 0:
                out.append(Result(r, Outcome.WARMING_UP))
                continue
            alarm = r.metric_value > 100
            onset = Onset(r.timestamp_ms, r.metric_value, 50.0, 40.0, 60.0)
            ep = EpisodeSummary(
                Change.OPENED, f"{r.series_id}@{r.timestamp_ms}", r.timestamp_ms, None, onset,
                0.99, 1, ("residual",),
            ) if alarm else None  # fmt: skip
            sc = Scored(
                deviation=1.0, predicted=50.0, lower=40.0, upper=60.0,
                score=0.99 if alarm else 0.1, outlier=alarm, alarm=alarm,
                model_version="" if r.device_id == "old" else "2", in_episode=alarm, episode=ep,
            )  # fmt: skip
            out.append(Result(r, Outcome.SCORED, sc))
        return out

    def warming_up(self) -> int:
        return 0


def reading(device: str, value: float, step: int, labelled: bool | None = None) -> Reading:
    return Reading(device, "pump", "temperature", value, T0 + step * 60_000, labelled)


def message(partition: int, offset: int, value: bytes, key: bytes = b"k") -> Incoming:
    return Incoming(TOPIC, partition, offset, key, value, T0 + offset)


def batch(*items: tuple[int, Reading | bytes]) -> list[Incoming]:
    offsets: dict[int, int] = {}
    out = []
    for part, item in items:
        off = offsets[part] = offsets.get(part, -1) + 1
        value = encode_reading(item) if isinstance(item, Reading) else item
        out.append(message(part, off, value))
    return out


OWNED = {(TOPIC, 0), (TOPIC, 1)}


def settings(**kw: object) -> Settings:
    return Settings().with_overrides(model_name="M", model_alias="production", **kw)


def test_anomalies_offsets_and_series_per_partition() -> None:
    msgs = batch(
        (0, reading("a", 1.0, 0)), (0, reading("a", 500.0, 1, True)),
        (1, reading("b", 1.0, 0)), (1, reading("b", 2.0, 1, True)),
    )  # fmt: skip
    out = process_batch(msgs, FakeEngine(), settings(), OWNED, clock=lambda: 1000.0)
    assert out.offsets == {(TOPIC, 0): 2, (TOPIC, 1): 2}
    assert out.series == {(TOPIC, 0): {"a/temperature"}, (TOPIC, 1): {"b/temperature"}}
    assert [k for k, _v in out.anomalies] == [b"a"]
    ev = orjson.loads(out.anomalies[0][1])
    assert ev["event"] == "opened" and ev["level"] == "series"
    assert ev["actual_value"] == 500.0 and ev["model_name"] == "M"
    assert ev["model_version"] == "2" and ev["model_alias"] == "production"
    assert out.scores == [] and out.dead_letters == []
    d = out.deltas
    assert d.outcomes[("pump", "temperature", "scored")] == 2
    assert d.outcomes[("pump", "temperature", "warming_up")] == 2
    assert d.anomalies == {("pump", "temperature"): 1}
    assert d.true_positives == {("pump", "temperature"): 1}
    assert d.false_negatives == {("pump", "temperature"): 1}
    assert not d.false_positives
    assert [s for _t, _m, s in d.scores] == [0.99, 0.1]
    assert len(d.stamps_ms) == 4


def test_malformed_messages_become_dead_letters_and_still_advance_offsets() -> None:
    msgs = batch((0, b"not json"), (0, reading("a", 1.0, 0)))
    out = process_batch(msgs, FakeEngine(), settings(), OWNED)
    assert out.offsets == {(TOPIC, 0): 2}
    (dl,) = out.dead_letters
    assert dl.error.reason == "not_json" and dl.message.offset == 0
    headers = dict(dl.headers())
    assert headers["reason"] == b"not_json"
    assert headers["source.topic"] == TOPIC.encode()
    assert headers["source.partition"] == b"0" and headers["source.offset"] == b"0"
    assert out.deltas.dead_letters == {"not_json": 1}


def test_messages_of_partitions_not_owned_are_skipped() -> None:
    msgs = batch((0, reading("a", 1.0, 0)), (2, reading("c", 1.0, 0)))
    engine = FakeEngine()
    out = process_batch(msgs, engine, settings(), OWNED)
    assert out.offsets == {(TOPIC, 0): 1}
    assert [r.device_id for r in engine.calls[0]] == ["a"]


def test_score_records_carry_every_reading_and_its_source() -> None:
    msgs = batch((1, reading("a", 1.0, 0)), (1, reading("a", 500.0, 1)))
    out = process_batch(msgs, FakeEngine(), settings(scores_topic="scores"), OWNED)
    recs = [orjson.loads(v) for _k, v in out.scores]
    assert [(r["source_partition"], r["source_offset"]) for r in recs] == [(1, 0), (1, 1)]
    assert [r["outcome"] for r in recs] == ["warming_up", "scored"]
    assert [r["is_anomaly"] for r in recs] == [False, True]
    assert [r["in_episode"] for r in recs] == [False, True] and recs[1]["device"] is None
    assert recs[0]["predicted_value"] is None and recs[1]["predicted_value"] == 50.0


def test_episode_event_falls_back_to_the_engine_version() -> None:
    r = reading("old", 500.0, 1)
    (res,) = FakeEngine().process([reading("old", 1.0, 0), r])[1:]
    ((key, value),) = episode_records(res, ModelStamp("M", "production", "9", 123))
    ev = orjson.loads(value)
    assert key == b"old" and ev["model_version"] == "9"


def test_a_renewed_device_episode_publishes_the_old_ones_close_before_the_new_open() -> None:
    from iot_mlops.scoring.device import DeviceDecision

    def summary(change: Change, start: int, end: int | None) -> EpisodeSummary:
        return EpisodeSummary(change, f"pump-1@{start}", start, end, Onset(start, 0.0), 1.0, 3, ())

    r = reading("pump-1", 500.0, 1)
    dev = DeviceDecision(
        t_ms=T0 + 1000, score=1.0, log_p=-20.0, onset=True, in_episode=True, closed=False,
        metrics=("temperature",), metric_count=2,
        episode=summary(Change.OPENED, T0 + 1000, None),
        superseded=summary(Change.ACCEPTED, T0, T0 + 1000),
    )  # fmt: skip
    res = Result(r, Outcome.SCORED, None, dev)
    evs = [orjson.loads(v) for _k, v in episode_records(res, ModelStamp("M", "p", "9", 1))]
    assert [(e["event"], e["level"], e["reason"]) for e in evs] == [
        ("closed", "device", "accepted"),
        ("opened", "device", None),
    ]
    assert evs[0]["episode_id"] != evs[1]["episode_id"]


def test_deltas_apply_to_the_metrics_and_gauges_are_capped() -> None:
    msgs = batch(
        (0, reading("a", 1.0, 0)), (0, reading("a", 500.0, 1, False)),
        (0, reading("b", 1.0, 0)), (0, reading("b", 2.0, 1)),
    )  # fmt: skip
    out = process_batch(msgs, FakeEngine(), settings(), OWNED)
    m = DetectorMetrics()
    apply_observed(out.deltas, m, SeriesGauges(m, limit=1))
    apply_committed(out.deltas, m, done_ms=T0 + 10_000)

    def value(name: str, **labels: str) -> float | None:
        return m.registry.get_sample_value(name, labels)

    series = {"device_type": "pump", "metric_name": "temperature"}
    assert value("iot_readings_total", outcome="scored", **series) == 2
    assert value("iot_anomalies_total", **series) == 1
    assert value("iot_episode_events_total", level="series", event="opened") == 1
    assert value("iot_live_false_positives_total", **series) == 1
    assert value("iot_anomaly_score_count", **series) == 2
    assert value("iot_detection_latency_seconds_count") == 4
    assert value("iot_series_actual_value", device_id="a", metric_name="temperature") == 500.0
    assert value("iot_series_actual_value", device_id="b", metric_name="temperature") is None


def test_a_huge_message_becomes_a_bounded_dead_letter_marked_as_cut() -> None:
    huge = b'{"pad": "' + b"x" * 999_930 + b'"}'
    msg = Incoming(TOPIC, 0, 7, b"k" * 5000, huge, T0)
    out = process_batch([msg], FakeEngine(), settings(dlq_max_value_bytes=1000), OWNED)
    (dl,) = out.dead_letters
    assert dl.error.reason == "oversized"
    assert dl.value == huge[:1000] and dl.key == b"k" * 1024 and dl.truncated
    h = dict(dl.headers())
    assert h["truncated"] == b"true" and h["original.value.size"] == str(len(huge)).encode()
    assert h["original.key.size"] == b"5000" and h["source.offset"] == b"7"
    assert out.deltas.dead_letters_truncated == {"oversized": 1}


def test_a_small_dead_letter_is_copied_whole_and_not_marked() -> None:
    (dl,) = process_batch(batch((0, b"not json")), FakeEngine(), settings(), OWNED).dead_letters
    assert dl.value == b"not json" and not dl.truncated
    assert "truncated" not in dict(dl.headers())


def test_a_reading_far_ahead_of_its_record_time_is_dead_lettered() -> None:
    msgs = [
        Incoming(TOPIC, 0, 0, b"a", encode_reading(reading("a", 1.0, 0)), T0),
        # Dated 2 hours after it was produced (bound: 1 h by default).
        Incoming(TOPIC, 0, 1, b"a", encode_reading(reading("a", 1.0, 120)), T0),
    ]
    engine = FakeEngine()
    out = process_batch(msgs, engine, settings(), OWNED)
    assert [r.timestamp_ms for r in engine.calls[0]] == [T0]
    (dl,) = out.dead_letters
    assert dl.error.reason == "clock_skew" and "ahead of" in dl.error.detail
    assert out.offsets == {(TOPIC, 0): 2}


def test_counts_wait_for_the_commit_and_only_gauges_are_set_before() -> None:
    msgs = batch((0, reading("a", 1.0, 0)), (0, reading("a", 500.0, 1, False)))
    out = process_batch(msgs, FakeEngine(), settings(), OWNED)
    m = DetectorMetrics()
    apply_observed(out.deltas, m, SeriesGauges(m, limit=5))
    registry = m.registry
    assert registry.get_sample_value("iot_series_actual_value", {"device_id": "a",
                                     "metric_name": "temperature"}) == 500.0  # fmt: skip
    for name in ("iot_readings_total", "iot_live_false_positives_total", "iot_anomaly_score_count"):
        assert registry.get_sample_value(name, {"device_type": "pump",
                                         "metric_name": "temperature", **(
            {"outcome": "scored"} if name == "iot_readings_total" else {})}) is None  # fmt: skip


def test_model_monitoring_counts_coverage_error_and_profile_bins() -> None:
    """Interval coverage, the scaled error and the input's bins of the training profile, all
    counted only once committed; every profile bin is exported from the model's load on."""
    from types import SimpleNamespace

    from iot_mlops.scoring.calibrate import Calibration

    engine = FakeEngine()
    prof = {"temperature": {"edges": [10.0, 50.0], "shares": [0.2, 0.5, 0.3]}}
    engine.model = SimpleNamespace(
        metadata=SimpleNamespace(data={"profile": prof, "trained_at": 0}),
        calibration=Calibration(lower_quantile=0.05, upper_quantile=0.95),
    )
    m = DetectorMetrics()
    m.show_model(engine.model)

    def value(name: str, **labels: str) -> float | None:
        return m.registry.get_sample_value(name, labels)

    assert value("iot_input_value_bin_total", metric_name="temperature", bin="0") == 0
    assert value("iot_training_value_bin_share", metric_name="temperature", bin="1") == 0.5
    assert value("iot_model_interval_nominal_coverage") == pytest.approx(0.9)
    assert value("iot_model_age_seconds") == 0  # not recorded: no age
    # Scored against the fake's interval [40, 60]: 45 and 55 inside, 500 outside.
    msgs = batch(*((0, reading("a", v, i)) for i, v in enumerate((1.0, 45.0, 55.0, 500.0))))
    out = process_batch(msgs, engine, settings(), OWNED)
    series = {"device_type": "pump", "metric_name": "temperature"}
    assert value("iot_forecast_in_interval_total", **series) is None  # not before the commit
    apply_committed(out.deltas, m, done_ms=T0 + 10_000)
    assert value("iot_forecast_in_interval_total", **series) == 2
    assert value("iot_forecast_abs_deviation_total", **series) == 3.0  # 1.0 per scored reading
    bins = [
        value("iot_input_value_bin_total", metric_name="temperature", bin=str(b)) for b in range(3)
    ]
    assert bins == [0, 1, 2]  # 45 in [10, 50); 55 and 500 from 50 up
    engine.model.metadata.data["trained_at"] = 1_000.0
    m.show_model(engine.model)  # a new model: its age, and the live bins start again
    assert value("iot_model_age_seconds") > 1e9
    assert value("iot_input_value_bin_total", metric_name="temperature", bin="2") == 0
