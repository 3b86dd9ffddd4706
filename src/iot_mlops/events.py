"""The reading and anomaly-episode-event schema, and their fast codec.

Decoding is on the detector's hot path, so it is orjson plus a handful of explicit checks
rather than a generic validator. Every way a message can be wrong maps to one bounded
``reason`` (used as a metric label and a dead-letter header) plus a human detail.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

# Bounded set of rejection reasons (metric label values / DLQ header values).
REASONS = (
    "oversized",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "non_finite",
    "bad_timestamp",
    "empty_id",
    "clock_skew",
)

REQUIRED_FIELDS = ("device_id", "device_type", "metric_name", "metric_value", "timestamp")
MAX_ID_CHARS = 256
# Timestamps outside this window are absurd for a live sensor (and break pandas' ns range).
MIN_TS_MS = 0  # 1970-01-01
MAX_TS_MS = 7_258_118_400_000  # 2200-01-01
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ReadingError(ValueError):
    """A message that is not a valid reading. ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Reading:
    device_id: str
    device_type: str
    metric_name: str
    metric_value: float
    timestamp_ms: int  # UTC epoch milliseconds
    is_anomaly: bool | None = None

    @property
    def series_id(self) -> str:
        """The AutoGluon ``item_id`` of this reading's series."""
        return series_id(self.device_id, self.metric_name)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "device_id": self.device_id,
            "device_type": self.device_type,
            "metric_name": self.metric_name,
            "metric_value": self.metric_value,
            "timestamp": format_ts(self.timestamp_ms),
        }
        if self.is_anomaly is not None:
            d["is_anomaly"] = self.is_anomaly
        return d


def series_id(device_id: str, metric_name: str) -> str:
    """``device/metric``, unambiguous: a ``/`` or ``%`` in the metric name is percent-encoded
    (as in a URL path segment), so ("a/b", "c") and ("a", "b/c") are two series, and the
    device is everything before the last ``/``. Ordinary names are unchanged."""
    if "/" in metric_name or "%" in metric_name:
        metric_name = metric_name.replace("%", "%25").replace("/", "%2F")
    return f"{device_id}/{metric_name}"


def format_ts(ts_ms: int) -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``, as the seed system wrote it."""
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def parse_ts(value: Any) -> int:
    """ISO 8601 string with an explicit offset → UTC epoch ms. Naive timestamps are refused:
    guessing a sensor's timezone silently shifts its series."""
    if not isinstance(value, str):
        raise ReadingError(
            "bad_timestamp", f"timestamp must be an ISO 8601 string, got {_kind(value)}"
        )
    if len(value) > 64:
        raise ReadingError("bad_timestamp", "timestamp string too long")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ReadingError("bad_timestamp", f"unparseable timestamp {value[:40]!r}") from None
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ReadingError("bad_timestamp", f"timestamp {value[:40]!r} has no timezone")
    try:
        delta = dt - _EPOCH  # exact integer arithmetic, no float rounding of milliseconds
    except OverflowError:
        raise ReadingError("bad_timestamp", f"timestamp {value[:40]!r} out of range") from None
    ts_ms = delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
    if not MIN_TS_MS <= ts_ms < MAX_TS_MS:
        raise ReadingError("bad_timestamp", f"timestamp {value[:40]!r} outside 1970..2200")
    return ts_ms


def _kind(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _text(obj: dict[str, Any], name: str) -> str:
    v = obj[name]
    if not isinstance(v, str):
        raise ReadingError("wrong_type", f"{name} must be a string, got {_kind(v)}")
    if not v.strip():
        raise ReadingError("empty_id", f"{name} is empty")
    if len(v) > MAX_ID_CHARS:
        raise ReadingError("wrong_type", f"{name} longer than {MAX_ID_CHARS} characters")
    if not v.isascii():
        # The lenient path (Python's json) accepts escaped lone surrogates ("\\ud800") that
        # orjson refuses. Such a string cannot be encoded as UTF-8: as a metric label it breaks
        # every /metrics scrape, and as an anomaly key it crashes the batch on every retry.
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise ReadingError(
                "wrong_type", f"{name} is not valid Unicode (lone surrogate)"
            ) from None
    return v


def decode_reading(data: bytes | None, max_bytes: int = 16_384) -> Reading:
    """Bytes → Reading, or ``ReadingError``. Never raises anything else."""
    if data is None:
        raise ReadingError("not_json", "empty message (null value)")
    if len(data) > max_bytes:
        raise ReadingError("oversized", f"{len(data)} bytes > limit {max_bytes}")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:  # also covers invalid UTF-8 and deep nesting
        obj = _lenient_loads(data, str(e))
    if not isinstance(obj, dict):
        raise ReadingError("not_object", f"expected a JSON object, got {_kind(obj)}")
    missing = [f for f in REQUIRED_FIELDS if f not in obj]
    if missing:
        raise ReadingError("missing_field", f"missing {', '.join(missing)}")
    value = obj["metric_value"]
    # bool is an int subclass in Python; a boolean is not a measurement.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReadingError("wrong_type", f"metric_value must be a number, got {_kind(value)}")
    try:
        value = float(value)
    except OverflowError:  # an integer beyond float range
        raise ReadingError("non_finite", "metric_value overflows a float") from None
    if not math.isfinite(value):
        raise ReadingError("non_finite", "metric_value is not finite")
    label = obj.get("is_anomaly")
    if label is not None and not isinstance(label, bool):
        raise ReadingError("wrong_type", f"is_anomaly must be a boolean, got {_kind(label)}")
    return Reading(
        device_id=_text(obj, "device_id"),
        device_type=_text(obj, "device_type"),
        metric_name=_text(obj, "metric_name"),
        metric_value=value,
        timestamp_ms=parse_ts(obj["timestamp"]),
        is_anomaly=label,
    )


def check_event_time(
    reading: Reading, record_ms: int, max_ahead_ms: int, max_behind_ms: int
) -> None:
    """``ReadingError("clock_skew")`` when the reading's event time is further ahead of (or
    behind) its Kafka record timestamp than allowed. A bound of 0 is off; a record without a
    timestamp (``record_ms <= 0``) is not checked."""
    if record_ms <= 0:
        return
    skew_ms = reading.timestamp_ms - record_ms
    if max_ahead_ms and skew_ms > max_ahead_ms:
        side = "ahead of"
    elif max_behind_ms and -skew_ms > max_behind_ms:
        side = "behind"
    else:
        return
    raise ReadingError(
        "clock_skew",
        f"event time {format_ts(reading.timestamp_ms)} is {abs(skew_ms) / 1000:.0f}s {side} "
        f"the record timestamp {format_ts(record_ms)}",
    )


def _lenient_loads(data: bytes, why: str) -> Any:
    """Slow path for what strict JSON refuses: Python's json accepts NaN/Infinity/1e999, which
    broken producers (``json.dumps`` of a NaN) really send, so the reason can say non_finite."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise ReadingError("not_json", why[:120]) from None


def encode_reading(reading: Reading) -> bytes:
    return orjson.dumps(reading.to_dict())


@dataclass(frozen=True, slots=True)
class OnsetReading:
    """The reading that opened an episode (for a device episode: no value or forecast)."""

    timestamp_ms: int
    actual_value: float | None = None
    predicted_value: float | None = None
    lower: float | None = None
    upper: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "timestamp": format_ts(self.timestamp_ms),
            "actual_value": self.actual_value,
            "predicted_value": self.predicted_value,
            "lower": self.lower,
            "upper": self.upper,
        }


@dataclass(frozen=True, slots=True)
class AnomalyEvent:
    """What the detector publishes to the anomalies topic: an episode ``opened`` at its onset
    and ``closed`` when the series (or device) is back to normal or the departure is accepted
    as its new normal (``reason``). One departure, one episode id, two events."""

    event: str  # "opened" | "closed"
    episode_id: str
    level: str  # "series" | "device"
    device_id: str
    device_type: str
    metric_name: str | None  # None for a device episode
    started_ms: int
    ended_ms: int | None
    onset: OnsetReading
    peak_score: float
    readings: int
    channels: tuple[str, ...]  # evidence that fired (device level: the metrics)
    model_name: str
    model_version: str
    model_alias: str
    detection_time_ms: int
    reason: str | None = None  # closed: "normal" | "accepted"
    labelled_anomaly: bool | None = None  # the onset reading's ground truth, when it has one

    def to_dict(self) -> dict[str, Any]:
        o = self.onset
        return {
            "event": self.event,
            "episode_id": self.episode_id,
            "level": self.level,
            "device_id": self.device_id,
            "device_type": self.device_type,
            "metric_name": self.metric_name,
            "started_at": format_ts(self.started_ms),
            "ended_at": None if self.ended_ms is None else format_ts(self.ended_ms),
            "onset": o.to_dict(),
            "peak_score": self.peak_score,
            "readings": self.readings,
            "channels": list(self.channels),
            "reason": self.reason,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "model_alias": self.model_alias,
            "detection_time": format_ts(self.detection_time_ms),
            # Flat copies of the onset, for consumers of one event per anomaly.
            "timestamp": format_ts(o.timestamp_ms),
            "actual_value": o.actual_value,
            "predicted_value": o.predicted_value,
            "lower": o.lower,
            "upper": o.upper,
            "anomaly_score": self.peak_score,
            "is_anomaly": True,
            "labelled_anomaly": self.labelled_anomaly,
        }


@dataclass(frozen=True, slots=True)
class SilenceEvent:
    """A series that stopped reporting: ``silent`` once its partition's log has moved
    ``silent_after_s`` past its last reading, then exactly one ``resumed`` (it reported
    again) or ``expired`` (its state was dropped; if it returns it warms up as a new series),
    under one ``episode_id``. ``last_reading_at`` and ``resumed_at`` are the readings'
    timestamps; ``started_at`` / ``ended_at`` are on the log's clock (record timestamps)."""

    event: str  # "silent" | "resumed" | "expired"
    episode_id: str
    device_id: str
    device_type: str
    metric_name: str
    last_reading_ms: int
    started_ms: int
    ended_ms: int | None
    resumed_ms: int | None
    silent_after_s: float
    model_name: str
    model_version: str
    model_alias: str
    detection_time_ms: int

    def to_dict(self) -> dict[str, Any]:
        def ts(ms: int | None) -> str | None:
            return None if ms is None else format_ts(ms)

        return {
            "event": self.event,
            "episode_id": self.episode_id,
            "level": "series",
            "device_id": self.device_id,
            "device_type": self.device_type,
            "metric_name": self.metric_name,
            "last_reading_at": format_ts(self.last_reading_ms),
            "started_at": format_ts(self.started_ms),
            "ended_at": ts(self.ended_ms),
            "resumed_at": ts(self.resumed_ms),
            "silent_after_s": self.silent_after_s,
            "reason": {"resumed": "reported", "expired": "expired"}.get(self.event),
            "model_name": self.model_name,
            "model_version": self.model_version,
            "model_alias": self.model_alias,
            "detection_time": format_ts(self.detection_time_ms),
        }


def encode_anomaly(event: AnomalyEvent | SilenceEvent) -> bytes:
    return orjson.dumps(event.to_dict())


def decode_anomaly(data: bytes) -> dict[str, Any]:
    return orjson.loads(data)
