"""The reading schema: validation reasons, round-trips, and no crash on arbitrary bytes."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iot_mlops.events import (
    REASONS,
    AnomalyEvent,
    OnsetReading,
    Reading,
    ReadingError,
    decode_anomaly,
    decode_reading,
    encode_anomaly,
    encode_reading,
    format_ts,
    parse_ts,
    series_id,
)

pytestmark = pytest.mark.unit

VALID = {
    "device_id": "pump-007",
    "device_type": "pump",
    "metric_name": "temperature",
    "metric_value": 71.3,
    "timestamp": "2026-11-26T04:00:00.000Z",
    "is_anomaly": False,
}


def enc(obj: object) -> bytes:
    # stdlib json: it also writes integers beyond 64 bits, as some producers do
    return json.dumps(obj).encode()


def reason_of(data: bytes) -> str:
    with pytest.raises(ReadingError) as exc:
        decode_reading(data)
    return exc.value.reason


def test_valid_reading_decodes() -> None:
    r = decode_reading(enc(VALID))
    assert r.device_id == "pump-007"
    assert r.metric_value == 71.3
    assert r.timestamp_ms == 1_795_665_600_000
    assert r.is_anomaly is False
    assert r.series_id == "pump-007/temperature"


def test_is_anomaly_is_optional_and_ints_are_numbers() -> None:
    obj = {k: v for k, v in VALID.items() if k != "is_anomaly"} | {"metric_value": 3}
    r = decode_reading(enc(obj))
    assert r.is_anomaly is None
    assert r.metric_value == 3.0 and isinstance(r.metric_value, float)


@pytest.mark.parametrize(
    "field", ["device_id", "device_type", "metric_name", "metric_value", "timestamp"]
)
def test_missing_field(field: str) -> None:
    obj = {k: v for k, v in VALID.items() if k != field}
    assert reason_of(enc(obj)) == "missing_field"


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"metric_value": "71.3"}, "wrong_type"),
        ({"metric_value": True}, "wrong_type"),
        ({"metric_value": None}, "wrong_type"),
        ({"device_id": 7}, "wrong_type"),
        ({"device_id": "  "}, "empty_id"),
        ({"is_anomaly": "yes"}, "wrong_type"),
        ({"timestamp": "2026-11-26T04:00:00"}, "bad_timestamp"),  # no timezone
        ({"timestamp": "yesterday"}, "bad_timestamp"),
        ({"timestamp": 1795665600000}, "bad_timestamp"),
        ({"timestamp": "1900-01-01T00:00:00Z"}, "bad_timestamp"),
        ({"timestamp": "9999-12-31T23:59:59+00:00"}, "bad_timestamp"),
    ],
)
def test_rejection_reasons(patch: dict, reason: str) -> None:
    assert reason_of(enc(VALID | patch)) == reason


def test_non_finite_values() -> None:
    # What a broken producer (Python's json.dumps of a NaN) really sends.
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"1" + b"0" * 400):
        data = enc(VALID).replace(b"71.3", literal)
        assert reason_of(data) == "non_finite"


def test_structural_rejections() -> None:
    assert reason_of(b"\xff\xfe garbage") == "not_json"
    assert reason_of(b"[1, 2]") == "not_object"
    assert reason_of(b"") == "not_json"
    assert reason_of(b"[" * 5000 + b"]" * 5000) == "not_json"  # deep nesting
    with pytest.raises(ReadingError) as exc:
        decode_reading(b'{"x": "' + b"a" * 20_000 + b'"}', max_bytes=16_384)
    assert exc.value.reason == "oversized"
    with pytest.raises(ReadingError) as exc:
        decode_reading(None)
    assert exc.value.reason == "not_json"


def test_timestamp_offsets_are_converted_to_utc() -> None:
    assert parse_ts("2026-11-26T06:00:00+02:00") == parse_ts("2026-11-26T04:00:00Z")
    assert format_ts(parse_ts("2026-11-26T04:00:00.123Z")) == "2026-11-26T04:00:00.123Z"


ids = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != "")
readings = st.builds(
    Reading,
    device_id=ids,
    device_type=ids,
    metric_name=ids,
    metric_value=st.floats(allow_nan=False, allow_infinity=False),
    timestamp_ms=st.integers(min_value=0, max_value=7_258_118_399_999),
    is_anomaly=st.none() | st.booleans(),
)


@given(readings)
def test_valid_readings_round_trip(r: Reading) -> None:
    assert decode_reading(encode_reading(r), max_bytes=1 << 20) == r


@settings(max_examples=400)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_the_schema_error(data: bytes) -> None:
    try:
        decode_reading(data)
    except ReadingError as e:
        assert e.reason in REASONS


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400)
@given(st.dictionaries(st.sampled_from([*VALID, "extra"]), json_values, max_size=7))
def test_arbitrary_json_objects_only_raise_the_schema_error(obj: dict) -> None:
    try:
        r = decode_reading(enc(obj))
    except ReadingError as e:
        assert e.reason in REASONS
    else:
        assert math.isfinite(r.metric_value)


def test_anomaly_event_round_trip() -> None:
    ev = AnomalyEvent(
        event="opened", episode_id="pump-007/temperature@1795665600000", level="series",
        device_id="pump-007", device_type="pump", metric_name="temperature",
        started_ms=1_795_665_600_000, ended_ms=None,
        onset=OnsetReading(1_795_665_600_000, 99.0, 71.0, 69.0, 73.0), peak_score=0.97,
        readings=1, channels=("residual",), model_name="m", model_version="3",
        model_alias="production", detection_time_ms=1_795_665_600_500, labelled_anomaly=True,
    )  # fmt: skip
    d = decode_anomaly(encode_anomaly(ev))
    assert d["event"] == "opened" and d["level"] == "series" and d["ended_at"] is None
    assert d["is_anomaly"] is True
    assert d["timestamp"] == d["started_at"] == "2026-11-26T04:00:00.000Z"
    assert d["onset"]["actual_value"] == 99.0 and d["channels"] == ["residual"]
    assert d["model_version"] == "3" and d["anomaly_score"] == 0.97
    for key in (
        "episode_id",
        "actual_value",
        "predicted_value",
        "lower",
        "upper",
        "detection_time",
        "model_alias",
        "peak_score",
        "readings",
    ):
        assert key in d


def test_event_time_bounds_against_the_record_timestamp() -> None:
    from iot_mlops.events import check_event_time

    t = 1_795_665_600_000
    r = Reading("d", "pump", "temperature", 1.0, t)
    hour = 3_600_000
    check_event_time(r, t - hour, hour, 0)  # exactly at the bound
    check_event_time(r, t + 400 * 86_400_000, hour, 0)  # behind: bound off
    check_event_time(r, 0, hour, hour)  # no record timestamp: not checked
    check_event_time(r, t - 10 * hour, 0, 0)  # both bounds off
    with pytest.raises(ReadingError) as ahead:
        check_event_time(r, t - hour - 1, hour, 0)
    assert ahead.value.reason == "clock_skew" and "ahead of" in ahead.value.detail
    with pytest.raises(ReadingError) as behind:
        check_event_time(r, t + 2 * hour, hour, hour)
    assert behind.value.reason == "clock_skew" and "behind" in behind.value.detail


def test_series_ids_are_unambiguous_and_ordinary_names_unchanged() -> None:
    assert series_id("a/b", "c") != series_id("a", "b/c")
    assert series_id("a", "b%2Fc") != series_id("a", "b/c")
    assert series_id("pump-007", "temperature") == "pump-007/temperature"
    # The device is everything before the last "/": a metric name never holds one.
    assert series_id("site/pump", "flow/min").rsplit("/", 1) == ["site/pump", "flow%2Fmin"]
