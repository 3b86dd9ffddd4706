"""The trainer service's schedule and loop (training/trainer.py): pure, with a fake clock."""

from __future__ import annotations

import threading

import pytest

from iot_mlops.errors import ServiceError
from iot_mlops.training.trainer import Schedule, due, fleet_psi, run

pytestmark = pytest.mark.unit

S = Schedule(every_s=100, drift_psi=0.25, cooldown_s=30, retry_s=10)


def test_due_first_schedule_drift_cooldown_and_retry() -> None:
    assert due(S, 0, None, None, None) == "first"
    assert due(S, 50, 0, 0, None) is None
    assert due(S, 100, 0, 0, None) == "schedule"
    assert due(S, 20, 0, 0, 0.9) is None  # drifted, but within the cooldown
    assert due(S, 40, 0, 0, 0.9) == "drift"
    assert due(S, 40, 0, 0, 0.2) is None and due(S, 40, 0, 0, float("nan")) is None
    # The last attempt (at 5) failed: retried after retry_s, whatever else is due.
    assert due(S, 10, None, 5, None) is None and due(S, 15, None, 5, None) == "retry"
    assert due(S, 155, 0, 150, 0.9) is None and due(S, 160, 0, 150, 0.9) == "retry"


def test_loop_retries_a_failed_cycle_and_never_stops_on_it() -> None:
    now = [0.0]
    calls: list[tuple[str, float | None]] = []

    def cycle(trigger: str, psi: float | None) -> None:
        calls.append((trigger, psi))
        if len(calls) == 1:
            raise ServiceError("MLflow at http://x is unreachable")
        if len(calls) == 2:  # not ours (e.g. AutoGluon's fit): retried the same way
            raise ValueError("Input contains NaN")

    stop = threading.Event()

    class Clock:
        def __call__(self) -> float:
            return now[0]

    def drift() -> float | None:
        now[0] += 6  # each poll moves the clock
        return 0.5

    n = run(cycle, S, drift, stop, poll_s=0, max_cycles=4, clock=Clock())
    assert n == 4
    assert [t for t, _p in calls] == ["first", "retry", "retry", "drift"]
    assert calls[0][1] == 0.5  # the evidence goes to the cycle


def test_unreachable_prometheus_gives_no_evidence() -> None:
    from iot_mlops.kafka.stack import free_port

    assert fleet_psi(f"http://127.0.0.1:{free_port()}") is None
