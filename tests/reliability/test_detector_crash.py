"""Fault 1: the detector process is SIGKILLed at random (seeded) points while a stream with
known anomalies flows in, and restarted each time. Exactly-once must hold: each anomaly of an
uninterrupted reference run is on the anomalies topic (read_committed) once, and every input
offset ends up committed."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest
from detector_helpers import (
    caught_up,
    committed_offsets,
    detector_process,
    end_offsets,
    wait_until,
)
from reliability_helpers import (
    FeedingProducer,
    Reference,
    anomaly_keys,
    compare,
    log_problems,
    record,
)

from iot_mlops.config import Settings

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

KILLS = 5
SEED = 20261126


def _done(s: Settings) -> int:
    return sum(max(0, o) for o in committed_offsets(s).values())


def test_sigkill_at_random_points_loses_and_duplicates_nothing(
    det_settings: Settings, reference: Reference, tmp_path: Path
) -> None:
    s, rng = det_settings, random.Random(SEED)
    total = len(reference.messages)
    # The stream keeps flowing through the kills: spread over about the time five
    # start-ups take on this machine.
    feeder = FeedingProducer(s, reference.messages, seconds=100)
    log = tmp_path / "detector.log"
    proc = detector_process(s, log)
    kills: list[dict] = []
    restarts: list[float] = []
    try:
        while len(kills) < KILLS:
            spawned, before = time.monotonic(), _done(s)
            if feeder.delivered >= total and before >= total:
                break  # nothing left to interrupt
            # Kill points (seeded): every other kill lands at a random moment of start-up
            # (imports, model download and warm-up, group join, state rebuild); the others
            # at a random moment after the incarnation's first commit, so they fall anywhere
            # in consume -> score -> transaction -> commit.
            if len(kills) % 2:
                phase, delay = "start-up", rng.uniform(3.0, 30.0)
                wait_until(
                    lambda b=before, d=delay, t=spawned: _done(s) > b or time.monotonic() - t > d,
                    240, "a start-up kill point", every=0.1,
                )  # fmt: skip
            else:
                phase = "streaming"
                wait_until(lambda b=before: _done(s) > b, 240, "progress before a kill", every=0.1)
                restarts.append(round(time.monotonic() - spawned, 2))  # spawn -> first commit
                time.sleep(rng.uniform(0.0, 2.5))
            at, alive = _done(s), time.monotonic() - spawned
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            kills.append(
                {"phase": phase, "committed_at_kill": at, "alive_s": round(alive, 2),
                 "producer_still_feeding": feeder.is_alive()}
            )  # fmt: skip
            print(f"kill {len(kills)} ({phase}): {at}/{total} committed, alive {alive:.1f}s")
            proc = detector_process(s, log)
        # Recovery after the last kill: restart to the first new commit, then to caught up.
        t_last, before = time.monotonic(), _done(s)
        wait_until(lambda: _done(s) > before, 240, "first commit after the last kill", every=0.1)
        restarts.append(round(time.monotonic() - t_last, 2))
        feeder.finish()
        wait_until(lambda: caught_up(s), 300, "restarted detector caught up")
        drain = time.monotonic() - t_last
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(kills) >= KILLS, f"the stream ended after {len(kills)} kills"

    got = anomaly_keys(s)
    tally = compare(reference.expected, got)
    ends = end_offsets(s, s.input_topic)
    committed = committed_offsets(s)
    uncommitted = sum(max(0, ends[p] - committed.get(p, 0)) for p in ends)
    problems = log_problems(log.read_text(errors="replace"))
    record(
        "detector_crash",
        {
            "kills_survived": len(kills),
            "kills_while_producer_feeding": sum(k["producer_still_feeding"] for k in kills),
            "readings_in": total,
            "input_offsets_committed": sum(committed.values()),
            "input_offsets_uncommitted": uncommitted,
            "anomalies_expected": tally.expected,
            "anomalies_out": tally.published,
            "lost": len(tally.lost),
            "duplicated": len(tally.duplicated),
            "unexpected": len(tally.unexpected),
            "kill_points": [f"{k['phase']}@{k['alive_s']}s" for k in kills],
            "kill_committed_at": [k["committed_at_kill"] for k in kills],
            "restart_to_first_commit_s": restarts,
            "final_drain_s": round(drain, 2),
            "seed": SEED,
        },
    )
    tally.check()
    assert uncommitted == 0 and sum(ends.values()) == total
    assert not problems, problems[:5]
