"""Fault 1: the detector process is SIGKILLed at random (seeded) points while a stream with
known anomalies flows in, and restarted each time. Exactly-once must hold: each anomaly of an
uninterrupted reference run is on the anomalies topic (read_committed) once, and every input
offset ends up committed."""

from __future__ import annotations

import random
import time
from pathlib import Path

from detector_helpers import committed_offsets, end_offsets, wait_until
from reliability_helpers import FaultRun, Reference, fault_run, record

from iot_mlops.config import Settings

KILLS = 5
SEED = 20261126


def test_sigkill_at_random_points_loses_and_duplicates_nothing(
    det_settings: Settings, reference: Reference, tmp_path: Path
) -> None:
    s, rng = det_settings, random.Random(SEED)
    # The stream keeps flowing through the kills: spread over about the time five
    # start-ups take on this machine.
    with fault_run(s, reference, tmp_path, feed_seconds=100) as run:
        kills, restarts = _kill_repeatedly(run, rng)
        # Recovery after the last kill: restart to the first new commit, then to caught up.
        t_last, before = time.monotonic(), run.done()
        run.wait_done(before, 240, "first commit after the last kill", every=0.1)
        restarts.append(round(time.monotonic() - t_last, 2))
        run.drain("restarted detector caught up")
        drain = time.monotonic() - t_last
        result = run.stop()
    assert len(kills) >= KILLS, f"the stream ended after {len(kills)} kills"
    ends = end_offsets(s, s.input_topic)
    committed = committed_offsets(s)
    uncommitted = sum(max(0, ends[p] - committed.get(p, 0)) for p in ends)
    record(
        "detector_crash",
        {
            **result.figures,
            "kills_survived": len(kills),
            "kills_while_producer_feeding": sum(k["producer_still_feeding"] for k in kills),
            "input_offsets_committed": sum(committed.values()),
            "input_offsets_uncommitted": uncommitted,
            "kill_points": [f"{k['phase']}@{k['alive_s']}s" for k in kills],
            "kill_committed_at": [k["committed_at_kill"] for k in kills],
            "restart_to_first_commit_s": restarts,
            "final_drain_s": round(drain, 2),
            "seed": SEED,
        },
    )
    result.tally.check()
    assert uncommitted == 0 and sum(ends.values()) == run.total
    assert not result.problems, result.problems[:5]


def _kill_repeatedly(run: FaultRun, rng: random.Random) -> tuple[list[dict], list[float]]:
    """SIGKILL and restart the detector ``KILLS`` times; the kills and the restart times."""
    kills: list[dict] = []
    restarts: list[float] = []
    while len(kills) < KILLS:
        spawned, before = time.monotonic(), run.done()
        if run.feeder.delivered >= run.total and before >= run.total:
            break  # nothing left to interrupt
        # Kill points (seeded): every other kill lands at a random moment of start-up
        # (imports, model download and warm-up, group join, state rebuild); the others
        # at a random moment after the incarnation's first commit, so they fall anywhere
        # in consume -> score -> transaction -> commit.
        if len(kills) % 2:
            phase, delay = "start-up", rng.uniform(3.0, 30.0)
            wait_until(
                lambda b=before, d=delay, t=spawned: run.done() > b or time.monotonic() - t > d,
                240, "a start-up kill point", every=0.1,
            )  # fmt: skip
        else:
            phase = "streaming"
            run.wait_done(before, 240, "progress before a kill", every=0.1)
            restarts.append(round(time.monotonic() - spawned, 2))  # spawn -> first commit
            time.sleep(rng.uniform(0.0, 2.5))
        at, alive = run.done(), time.monotonic() - spawned
        run.kill()
        kills.append(
            {"phase": phase, "committed_at_kill": at, "alive_s": round(alive, 2),
             "producer_still_feeding": run.feeder.is_alive()}
        )  # fmt: skip
        print(f"kill {len(kills)} ({phase}): {at}/{run.total} committed, alive {alive:.1f}s")
        run.restart()
    return kills, restarts
