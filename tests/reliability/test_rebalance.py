"""Fault 6: the consumer group changes mid-stream. Two detector processes share the input (6
partitions), a third joins, then one of the first two leaves (SIGTERM), while the stream flows
in. Exactly-once holds against the reference run, no partition is ever reported by two
detectors at once, and every valid reading is scored exactly once across the three: each
detector publishes one record per reading it consumed to a scores topic, in the same
transaction as its offsets, so the committed records must cover every input offset once."""

from __future__ import annotations

import itertools
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
from detector_helpers import (
    ProductionModel,
    caught_up,
    detector_process,
    detector_settings,
    read_all,
    wait_until,
)
from reliability_helpers import (
    FeedingProducer,
    Reference,
    committed_total,
    fresh_topics,
    outcome,
    record,
)

from iot_mlops.config import Settings
from iot_mlops.kafka.stack import free_port
from iot_mlops.kafka.topics import create_topics

PARTITIONS = 6


def _partitions(port: int) -> set[str]:
    try:
        return set(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()["partitions"])
    except (httpx.HTTPError, ValueError, KeyError):
        return set()


class OwnershipWatch(threading.Thread):
    """Polls each detector's /healthz; records any partition reported by two at once."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.ports: dict[str, int] = {}
        self.overlaps: list = []
        self.samples = 0
        self.halt = threading.Event()
        self.start()

    def owned(self) -> dict[str, set[str]]:
        return {name: _partitions(port) for name, port in list(self.ports.items())}

    def run(self) -> None:
        while not self.halt.wait(0.2):
            # The detectors are asked one after the other, so one sample can straddle a
            # hand-over; an overlap counts only if a second sample right after confirms it.
            seen = self._overlaps(self.owned())
            if seen:
                seen = self._overlaps(self.owned())
            self.overlaps += seen
            self.samples += 1

    @staticmethod
    def _overlaps(owned: dict[str, set[str]]) -> list:
        return [
            (a, b, sorted(pa & pb))
            for (a, pa), (b, pb) in itertools.combinations(owned.items(), 2)
            if pa & pb
        ]


def test_join_and_leave_mid_stream(
    stack_settings: Settings,
    production_model: ProductionModel,
    reference: Reference,
    tmp_path: Path,
) -> None:
    base = fresh_topics(stack_settings, "rb", partitions=PARTITIONS)
    s = detector_settings(base, production_model).model_copy(
        update={"scores_topic": f"{base.input_topic}.scores"}
    )
    create_topics(s, {s.scores_topic: PARTITIONS})
    total = len(reference.messages)
    everything = {f"{s.input_topic}[{p}]" for p in range(PARTITIONS)}
    procs: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}
    watch = OwnershipWatch()

    def spawn(name: str) -> None:
        port = free_port()
        logs[name] = tmp_path / f"detector-{name}.log"
        procs[name] = detector_process(
            s.model_copy(update={"metrics_port": port}), logs[name],
            IOT_MLOPS_SCORES_TOPIC=s.scores_topic, IOT_MLOPS_INSTANCE_ID=name,
        )  # fmt: skip
        watch.ports[name] = port

    def union(*names: str) -> set[str]:
        owned = watch.owned()
        return set().union(*(owned.get(n, set()) for n in names))

    # Slow enough that the join and the leave both happen while readings still flow in
    # (three detector start-ups on 2 cores take a minute or two).
    feeder = FeedingProducer(s, reference.messages, seconds=150)
    rcs: dict[str, int] = {}
    try:
        spawn("a")
        spawn("b")
        wait_until(
            lambda: all(watch.owned().get(n) for n in "ab") and union("a", "b") == everything,
            240, "a and b share the partitions",
        )  # fmt: skip
        wait_until(lambda: committed_total(s) > total // 5, 240, "a fifth of the stream committed")
        joined_at = committed_total(s)
        t_join = time.monotonic()
        spawn("c")
        wait_until(lambda: bool(watch.owned().get("c")), 240, "c assigned")
        join_s = time.monotonic() - t_join
        wait_until(lambda: committed_total(s) > joined_at + 300, 240, "progress with three")
        left_at = committed_total(s)
        t_leave = time.monotonic()
        procs["a"].send_signal(signal.SIGTERM)
        rcs["a"] = procs["a"].wait(60)
        watch.ports.pop("a")
        wait_until(lambda: union("b", "c") == everything, 120, "b and c own every partition")
        leave_s = time.monotonic() - t_leave
        feeder.finish()
        wait_until(lambda: caught_up(s), 300, "b and c caught up")
        drain_s = time.monotonic() - t_leave
        for name in "bc":
            procs[name].send_signal(signal.SIGTERM)
            rcs[name] = procs[name].wait(60)
    finally:
        watch.halt.set()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    assert rcs == {"a": 0, "b": 0, "c": 0}, rcs
    result = outcome(s, reference, feeder, logs.values())
    scored = Counter(
        (r["source_partition"], r["source_offset"])
        for r in (orjson.loads(m.value()) for m in read_all(s, s.scores_topic, timeout=120))
    )
    twice = [k for k, n in scored.items() if n > 1]
    record(
        "rebalance",
        {
            **result.figures,
            "detectors": "a+b, c joins, a leaves (3 processes)",
            "partitions": PARTITIONS,
            "committed_at_join": joined_at,
            "committed_at_leave": left_at,
            "readings_scored_once": sum(1 for n in scored.values() if n == 1),
            "readings_scored_twice": len(twice),
            "ownership_samples": watch.samples,
            "ownership_overlaps": len(watch.overlaps),
            "join_to_assigned_s": round(join_s, 2),
            "leave_to_reassigned_s": round(leave_s, 2),
            "leave_to_caught_up_s": round(drain_s, 2),
        },
    )
    result.tally.check()
    assert left_at < total, "the stream was over before a left: not a mid-stream rebalance"
    assert not twice, f"readings scored twice: {twice[:5]}"
    assert len(scored) == total, f"{total - len(scored)} readings never scored"
    assert not watch.overlaps, watch.overlaps[:5]
    assert not result.problems, result.problems[:5]
