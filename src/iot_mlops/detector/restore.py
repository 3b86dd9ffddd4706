"""State restore: on assignment (or after a rewind) each series' window is rebuilt by
replaying the recent log before the committed offset through the same engine (context only,
nothing is emitted or counted), so a replica that takes over a partition scores like the one
that left (silence and expiry included, see ``replay``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import Consumer, Message, TopicPartition

from iot_mlops.config import Settings
from iot_mlops.detector.batch import Partition, event_time_bounds_ms, log_time_ms
from iot_mlops.events import Reading, ReadingError, check_event_time, decode_reading
from iot_mlops.kafka import clients
from iot_mlops.scoring.engine import Engine

log = logging.getLogger("iot_mlops.detector")

REPLAY_CHUNK = 5000  # readings per engine call while replaying
READ_BACK_TIMEOUT_S = 300.0
Logged = tuple[Reading, tuple[int, int]]  # a reading and its (partition, log time ms)


def rebuild(
    settings: Settings,
    engine: Engine,
    committed: list[TopicPartition],
    probe: Consumer | None,
    on_progress: Callable[[], None] = lambda: None,
) -> dict[Partition, set[str]]:
    """Replay up to ``rebuild_messages`` per partition before the committed offset through
    the engine. ``probe`` (the group's consumer) gives the low watermarks; without it the
    read-back starts at offset 0. ``on_progress`` is called as the read and the replay move
    (the detector's liveness). Returns the series seen in each partition."""
    starts, ends = _read_back_ranges(settings, committed, probe)
    if not starts:
        return {}
    t0 = time.monotonic()
    history, series = _read_history(settings, starts, ends, on_progress)
    tail = replay(engine, history, settings.rebuild_scale_points, on_progress)
    log.info(
        "rebuilt state of %d partition(s) from %d readings in %.1fs",
        len(ends), len(tail), time.monotonic() - t0,
    )  # fmt: skip
    return series


def replay(
    engine: Engine,
    history: list[Logged],
    scale_points: int,
    on_progress: Callable[[], None] = lambda: None,
) -> list[Logged]:
    """Each series' recent tail of ``history`` through the engine, nothing emitted; returns
    the tail replayed. The log times go along, so the series the old owner already reported
    silent or expired are silent or gone here too (and not reported again)."""
    keep = engine.model.context_length + 2 * engine.horizon + scale_points
    tail = recent_tail(history, keep)
    for i in range(0, len(tail), REPLAY_CHUNK):
        chunk = tail[i : i + REPLAY_CHUNK]
        engine.process([r for r, _t in chunk], times=[t for _r, t in chunk])
        engine.sweep()
        on_progress()
    return tail


def _read_back_ranges(
    settings: Settings, committed: list[TopicPartition], probe: Consumer | None
) -> tuple[list[TopicPartition], dict[Partition, int]]:
    """Where each partition's read-back starts, and the offset it ends before."""
    starts: list[TopicPartition] = []
    ends: dict[Partition, int] = {}
    for tp in committed:
        if tp.offset <= 0 or settings.rebuild_messages == 0:
            continue
        low, _high = probe.get_watermark_offsets(tp, timeout=10) if probe else (0, 0)
        start = max(low, tp.offset - settings.rebuild_messages)
        if start < tp.offset:
            starts.append(TopicPartition(tp.topic, tp.partition, start))
            ends[(tp.topic, tp.partition)] = tp.offset
    return starts, ends


def _read_history(
    settings: Settings,
    starts: list[TopicPartition],
    ends: dict[Partition, int],
    on_progress: Callable[[], None],
) -> tuple[list[Logged], dict[Partition, set[str]]]:
    """The valid readings of the read-back ranges, in log order per partition."""
    s = settings
    reader = clients.consumer(
        s,
        f"{s.consumer_group}-rebuild",
        **{
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        },
    )
    history: list[Logged] = []
    series: dict[Partition, set[str]] = {}

    bounds = event_time_bounds_ms(s)

    def take(msg: Message) -> None:
        try:
            r = decode_reading(msg.value(), s.max_message_bytes)
            # What the live path dead-lettered must not reach the state on a rebuild either.
            check_event_time(r, msg.timestamp()[1], *bounds)
        except ReadingError:
            return
        series.setdefault((msg.topic(), msg.partition()), set()).add(r.series_id)
        history.append((r, (msg.partition(), log_time_ms(msg.timestamp()[1], r))))

    try:
        reader.assign(starts)
        clients.read_to_end(
            reader, ends, take, timeout_s=READ_BACK_TIMEOUT_S, poll_s=1.0, on_round=on_progress
        )
    finally:
        reader.close()
    return history, series


def recent_tail(history: list[Logged], keep: int) -> list[Logged]:
    """The last ``keep`` readings of each series, in their original order.

    Only each series' recent past shapes its state (window, forecast block, adaptive scale,
    alarm run): replaying this tail, not the whole read-back, makes a takeover cost a few
    model rounds instead of one per block of the read-back."""
    seen: dict[str, int] = {}
    tail: list[Logged] = []
    for item in reversed(history):
        sid = item[0].series_id
        n = seen.get(sid, 0)
        if n < keep:
            seen[sid] = n + 1
            tail.append(item)
    tail.reverse()
    return tail
