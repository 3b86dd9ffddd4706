"""Silent sensors and idle-series expiry. Pure: no I/O, no wall clock.

A series is *silent* once its partition's log has moved ``silent_after`` past the series' last
reading without a new one; it *resumes* with its next reading; it *expires* (its state is
dropped, so memory follows the live fleet, not every series ever seen) once the log has moved
``expire_after`` past it. One silence gives one ``silent`` event and then exactly one
``resumed`` or ``expired``, under one id.

The clock is the log's own: per partition, the largest Kafka record timestamp of its valid
readings so far (the event time when a record has none). Not the wall clock, so a replay, a
rebuild or a redone batch reaches the same decisions; and not the readings' event times,
because one device whose clock runs ahead (accepted up to ``IOT_MLOPS_EVENT_TIME_MAX_AHEAD_S``)
would push a max-of-event-times past every other series of its partition and mark them all
silent, while a backfill (old event times produced in seconds) is no outage.

Decisions do not depend on how the log is cut into batches: a series is checked against the
partition's clock just before each of its readings (in log order) and at the end of every
batch (``Engine.sweep``), and an event's fields come from the series' own times only. The
clock is read to the model's grid step (a sweep is due once a step, not once a batch: with
100,000 series a sweep costs a few hundred ms), so a silence is found within a step of due.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# Missing readings before a series counts as silent, when IOT_MLOPS_SILENT_AFTER_S is 0: a
# gap of a few steps is common (the model fills NaN gaps); ten in a row is an outage.
SILENT_AFTER_STEPS = 10


class Silence(StrEnum):
    SILENT = "silent"
    RESUMED = "resumed"
    EXPIRED = "expired"


@dataclass(frozen=True)
class LivenessConfig:
    """Settings ``IOT_MLOPS_SILENT_AFTER_S`` and ``IOT_MLOPS_EXPIRE_AFTER_S`` (0 = from the
    model's grid, see ``thresholds_ms``)."""

    silent_after_s: float = 0.0
    expire_after_s: float = 0.0

    def thresholds_ms(self, step_ms: int, context_length: int) -> tuple[int, int]:
        """(silent after, expire after) in ms for a model on ``step_ms`` with that context.

        Auto expiry is one context length of missing steps: after such a gap the series'
        window is cleared anyway when it returns (state.py's long-outage rule), so dropping
        it loses only the channels' history. Expiry comes at least a step after silence (a
        model swap may change the step under an explicit expiry: no crash mid-stream)."""
        silent = round(self.silent_after_s * 1000) or SILENT_AFTER_STEPS * step_ms
        expire = round(self.expire_after_s * 1000) or max(context_length * step_ms, 2 * silent)
        return silent, max(expire, silent + step_ms)


@dataclass(frozen=True)
class LivenessEvent:
    """A series fell silent, resumed, or expired. Times: ``last_ms`` and ``resumed_ms`` are
    event times (the readings' timestamps), ``since_ms`` and ``ended_ms`` log times."""

    kind: Silence
    series_id: str
    device_id: str
    device_type: str
    metric_name: str
    last_ms: int  # timestamp of the series' last reading before the silence
    since_ms: int  # log time it became silent: its last log time + silent_after
    ended_ms: int | None = None  # resumed: the returning reading's log time; expired: when
    resumed_ms: int | None = None  # resumed: the returning reading's timestamp

    @property
    def episode_id(self) -> str:
        return f"{self.series_id}@silent@{self.last_ms}"


@dataclass
class Presence:
    """What liveness keeps of one series (beside its scoring state)."""

    clock: object  # the partition whose log time judges this series
    seen_ms: int  # log time of its newest reading
    reading_ms: int  # timestamp of its newest reading
    device_type: str = ""
    metric_name: str = ""
    silent: bool = False


def check(
    p: Presence, key: str, device_id: str, now_ms: int, silent_ms: int, expire_ms: int
) -> list[LivenessEvent]:
    """The events due for a series whose partition's log time is ``now_ms``; marks it silent.
    An ``expired`` event means: drop the series."""
    out: list[LivenessEvent] = []
    idle = now_ms - p.seen_ms
    since = p.seen_ms + silent_ms
    args = (key, device_id, p.device_type, p.metric_name, p.reading_ms, since)
    if idle >= silent_ms and not p.silent:
        p.silent = True
        out.append(LivenessEvent(Silence.SILENT, *args))
    if idle >= expire_ms:
        out.append(LivenessEvent(Silence.EXPIRED, *args, ended_ms=p.seen_ms + expire_ms))
    return out


def report(
    p: Presence, key: str, device_id: str, log_ms: int, reading_ms: int, silent_ms: int
) -> LivenessEvent | None:
    """The series reported (any valid reading, late or duplicate too: the sensor is alive);
    returns its ``resumed`` event when it was silent."""
    event = None
    if p.silent:
        event = LivenessEvent(
            Silence.RESUMED, key, device_id, p.device_type, p.metric_name, p.reading_ms,
            p.seen_ms + silent_ms, ended_ms=log_ms, resumed_ms=reading_ms,
        )  # fmt: skip
        p.silent = False
    p.seen_ms = max(p.seen_ms, log_ms)
    p.reading_ms = max(p.reading_ms, reading_ms)
    return event
