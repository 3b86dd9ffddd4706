"""What the detector publishes, built in one place: episode events for ``iot_anomalies`` and
the per-reading audit record of the scores topic. Pure functions of the engine's results."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from iot_mlops.events import AnomalyEvent, OnsetReading, SilenceEvent, encode_anomaly
from iot_mlops.scoring.device import DeviceDecision
from iot_mlops.scoring.engine import Result
from iot_mlops.scoring.episodes import Change, EpisodeSummary
from iot_mlops.scoring.liveness import LivenessEvent

Record = tuple[bytes, bytes]  # (key, value)


@dataclass(frozen=True)
class ModelStamp:
    """Which model decided, and when: stamped on every anomaly event."""

    model_name: str
    model_alias: str
    model_version: str  # the engine's current version (used when a score carries none)
    detection_time_ms: int


def episode_records(res: Result, stamp: ModelStamp) -> list[Record]:
    """The ``iot_anomalies`` events this reading causes: its series' episode opening or
    closing, and the device's (for devices of two metrics or more: a one-metric device's
    episode is its series')."""
    out: list[Record] = []
    sc, r = res.scored, res.reading
    if sc is not None and sc.episode is not None:
        out.append(_record(res, sc.episode, "series", stamp, sc.model_version))
    dev = res.device
    if dev is not None and dev.metric_count > 1:
        version = sc.model_version if sc else ""
        # A renewed device episode: the old one's closed event comes before the new opened.
        for ep in (dev.superseded, dev.episode):
            if ep is not None:
                out.append(_record(res, ep, "device", stamp, version))
    return out if r.device_id else []


def _record(res: Result, ep: EpisodeSummary, level: str, stamp: ModelStamp, version: str) -> Record:
    r, o = res.reading, ep.onset
    # Times are on the model's grid (a reading is aligned to its step), so the opened and the
    # closed event of one episode agree on when it started.
    onset = OnsetReading(
        o.timestamp_ms,
        None if level == "device" else o.actual,
        o.predicted,
        o.lower,
        o.upper,
    )
    ev = AnomalyEvent(
        event="opened" if ep.change is Change.OPENED else "closed",
        episode_id=ep.episode_id,
        level=level,
        device_id=r.device_id,
        device_type=r.device_type,
        metric_name=r.metric_name if level == "series" else None,
        started_ms=ep.started_ms,
        ended_ms=ep.ended_ms,
        onset=onset,
        peak_score=round(ep.peak_score, 6),
        readings=ep.readings,
        channels=ep.channels,
        model_name=stamp.model_name,
        model_version=version or stamp.model_version,
        model_alias=stamp.model_alias,
        detection_time_ms=stamp.detection_time_ms,
        reason={Change.CLOSED: "normal", Change.ACCEPTED: "accepted"}.get(ep.change),
        labelled_anomaly=r.is_anomaly if ep.change is Change.OPENED else None,
    )
    return r.device_id.encode(), encode_anomaly(ev)


def silence_record(ev: LivenessEvent, stamp: ModelStamp, silent_after_ms: int) -> Record:
    """A ``silent`` / ``resumed`` / ``expired`` event of ``iot_anomalies`` (key = device)."""
    out = SilenceEvent(
        event=ev.kind.value,
        episode_id=ev.episode_id,
        device_id=ev.device_id,
        device_type=ev.device_type,
        metric_name=ev.metric_name,
        last_reading_ms=ev.last_ms,
        started_ms=ev.since_ms,
        ended_ms=ev.ended_ms,
        resumed_ms=ev.resumed_ms,
        silent_after_s=silent_after_ms / 1000,
        model_name=stamp.model_name,
        model_version=stamp.model_version,
        model_alias=stamp.model_alias,
        detection_time_ms=stamp.detection_time_ms,
    )
    return ev.device_id.encode(), encode_anomaly(out)


def _device(d: DeviceDecision | None) -> dict | None:
    if d is None:
        return None
    return {
        "t_ms": d.t_ms,
        "score": d.score,
        "onset": d.onset,
        "in_episode": d.in_episode,
        "closed": d.closed,
    }


def score_record(res: Result, source: tuple[int, int]) -> bytes:
    """The per-reading audit record (``IOT_MLOPS_SCORES_TOPIC``); ``source`` is the reading's
    (partition, offset). ``is_anomaly`` is the onset of an episode."""
    r, sc = res.reading, res.scored
    return orjson.dumps(
        {
            "source_partition": source[0],
            "source_offset": source[1],
            "device_id": r.device_id,
            "metric_name": r.metric_name,
            "timestamp_ms": r.timestamp_ms,
            "outcome": res.outcome.value,
            "anomaly_score": sc.score if sc else 0.0,
            "is_anomaly": bool(sc and sc.alarm),
            "in_episode": bool(sc and sc.in_episode),
            "closed": bool(sc and sc.closed),
            "channels": list(sc.fired) if sc else [],
            "predicted_value": sc.predicted if sc else None,
            "lower": sc.lower if sc else None,
            "upper": sc.upper if sc else None,
            "model_version": sc.model_version if sc else None,
            "device": _device(res.device),
        }
    )
