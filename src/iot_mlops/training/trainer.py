"""``iot-mlops trainer``: continuous training as a long-running service.

Every ``poll_s`` it asks Prometheus for the fleet's input drift (the largest PSI of any metric,
model/profile.py) and runs a retrain cycle (training/retrain.py) when one is due: on the
schedule (``every_s`` since the last cycle), or early when the drift crosses its bound (at most
once per ``cooldown_s``). A failed cycle (Kafka or MLflow down, a fit error) is logged and
retried after ``retry_s``; nothing of it is promoted. SIGTERM / Ctrl-C stop it between cycles.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from iot_mlops.errors import IotMlopsError
from iot_mlops.model import profile

log = logging.getLogger("iot_mlops.trainer")


@dataclass(frozen=True)
class Schedule:
    every_s: float  # a cycle at least this often
    drift_psi: float  # ... and earlier when the fleet's largest PSI is above this
    cooldown_s: float  # no drift-triggered cycle sooner than this after the last one
    retry_s: float  # after a failed cycle


def due(
    sched: Schedule, now: float, last_ok: float | None, last_try: float | None, psi: float | None
) -> str | None:
    """Why a cycle should run now ("first", "schedule", "drift", "retry"), or None. Pure."""
    if last_try is not None and (last_ok is None or last_try > last_ok):
        return "retry" if now - last_try >= sched.retry_s else None  # the last one failed
    if last_ok is None:
        return "first"
    if now - last_ok >= sched.every_s:
        return "schedule"
    drifted = psi is not None and math.isfinite(psi) and psi > sched.drift_psi
    return "drift" if drifted and now - last_ok >= sched.cooldown_s else None


def fleet_psi(prometheus_url: str, window: str = "1h") -> float | None:
    """The largest PSI of any metric over ``window`` (None: Prometheus unreachable, or no
    detector data yet). Unreachable is logged, not raised: the schedule still holds."""
    query = f"max({profile.psi_promql(profile.DETECTOR_JOB, window)})"
    try:
        r = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": query}, timeout=10)
        r.raise_for_status()
        result = r.json()["data"]["result"]
    except (httpx.HTTPError, KeyError, ValueError) as e:
        log.warning("trainer: no drift evidence from Prometheus at %s (%s)", prometheus_url, e)
        return None
    return float(result[0]["value"][1]) if result else None


def run(
    cycle: Callable[[str, float | None], object],
    sched: Schedule,
    drift: Callable[[], float | None],
    stop: threading.Event,
    poll_s: float = 60.0,
    max_cycles: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """The service loop; ``cycle(trigger, psi)`` runs one retrain. Returns cycles attempted."""
    last_ok = last_try = None
    attempts = 0
    while not stop.is_set() and (max_cycles is None or attempts < max_cycles):
        psi = drift()
        trigger = due(sched, clock(), last_ok, last_try, psi)
        if trigger is not None:
            attempts += 1
            last_try = clock()
            try:
                cycle(trigger, psi)
                last_ok = clock()
            except IotMlopsError as e:  # ours: the message names the thing and the fix
                log.error("trainer: %s cycle failed: %s (retry in %gs)", trigger, e, sched.retry_s)
            except Exception:  # a fit or library error must not end the service either
                log.exception("trainer: %s cycle failed (retry in %gs)", trigger, sched.retry_s)
            continue
        stop.wait(poll_s)
    return attempts
