"""Device level: a device's metrics combined per time step, independent of batching."""

from __future__ import annotations

import math

import pytest

from iot_mlops.scoring.calibrate import Calibration
from iot_mlops.scoring.device import DeviceState, harmonic_mean_log_p
from iot_mlops.scoring.rules import Rules

pytestmark = pytest.mark.unit
RULES = Rules(Calibration(target_false_alarm_rate=0.002))
LR = math.log(0.002)


def test_harmonic_mean_is_dominated_by_the_rarest_and_adds_up_weak_ones() -> None:
    assert harmonic_mean_log_p([LR - 10, 0.0, 0.0, 0.0]) < LR
    weak = math.log(0.02)
    assert harmonic_mean_log_p([weak] * 8) == pytest.approx(weak)
    assert harmonic_mean_log_p([0.0, 0.0]) == 0.0


def test_a_step_is_decided_when_every_metric_reported_or_a_later_time_arrives() -> None:
    d = DeviceState("pump-1")
    for m in ("a", "b", "c"):  # learn the metric set
        d.observe(m, 0, 0.0, RULES)
    first = d.observe("a", 1, 0.0, RULES)  # step 0 was incomplete while the set was learnt
    assert first is not None and first.t_ms == 0 and not first.in_episode
    assert d.observe("b", 1, 0.0, RULES) is None
    done = d.observe("c", 1, LR - 20, RULES)
    assert done is not None and done.t_ms == 1 and done.onset and done.metrics == ("c",)
    # metric c misses step 2: decided when step 3 arrives
    d.observe("a", 2, 0.0, RULES)
    late = d.observe("b", 2, 0.0, RULES)
    assert late is None
    nxt = d.observe("a", 3, 0.0, RULES)
    assert nxt is not None and nxt.t_ms == 2 and nxt.in_episode


def test_a_metric_still_away_from_its_level_holds_the_device_episode() -> None:
    """After the series relearnt a departure, its own evidence is ordinary; its evidence
    against the pre-onset level holds the device's episode until the metric is back, and a
    departure that is only held (never rare now) opens nothing."""
    from iot_mlops.scoring.episodes import EpisodePolicy

    rules = Rules(RULES.calibration, device_episodes=EpisodePolicy(close_after=3))
    d, away = DeviceState("pump-1"), LR * 2.5  # rarer than rate ** 2, the departure bar
    for m in ("a", "b"):
        d.observe(m, 0, 0.0, rules)
    d.observe("a", 1, LR - 20, rules)
    opened = d.observe("b", 1, 0.0, rules)
    assert opened is not None and opened.onset
    held = []
    for t in range(2, 30):
        d.observe("a", t, 0.0, rules, hold_log_p=away if t < 20 else 0.0)
        dec = d.observe("b", t, 0.0, rules)
        assert dec is not None and not dec.onset
        held.append(dec.in_episode)
    assert all(held[:18]) and not any(held[21:])  # 2..19 held, closed 3 steps after
    quiet = DeviceState("pump-2")
    quiet_decisions = [quiet.observe("a", t, 0.0, rules, hold_log_p=away) for t in range(5)]
    assert not any(q.onset for q in quiet_decisions if q is not None)
