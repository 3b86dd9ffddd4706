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


def _two_metric_device(rules: Rules) -> DeviceState:
    d = DeviceState("pump-1")
    for m in ("a", "b"):
        d.observe(m, 0, 0.0, rules)
    return d


def test_a_new_departure_after_the_series_relearnt_renews_the_device_episode() -> None:
    """A device episode held open (its metric still away from the old level) is renewed by
    fresh onset-level evidence once it has lasted renew_after steps: the old episode closes
    as accepted and a new one opens at that step; before renew_after it is the same episode."""
    from iot_mlops.scoring.episodes import Change, EpisodePolicy

    policy = EpisodePolicy(close_after=30, departure_hold=2.0, renew_after=10)
    rules = Rules(RULES.calibration, device_episodes=policy)
    d, away = _two_metric_device(rules), LR * 2.5

    def step(t: int, a: float, hold: float | None = away):
        d.observe("a", t, a, rules, hold_log_p=hold)
        dec = d.observe("b", t, 0.0, rules)
        assert dec is not None and dec.t_ms == t
        return dec

    assert step(1, LR - 20, None).onset
    assert all(step(t, 0.0).in_episode for t in range(2, 5))
    early = step(5, LR - 20)  # rare again, but within renew_after: still the first episode
    assert not early.onset and early.superseded is None and early.in_episode
    for t in range(6, 12):
        assert step(t, 0.0).in_episode  # held by the departure alone
    renewed = step(12, LR - 20)
    assert renewed.onset and renewed.in_episode and not renewed.closed
    old, new = renewed.superseded, renewed.episode
    assert old is not None and new is not None
    assert (old.change, old.started_ms, old.ended_ms, old.readings) == (Change.ACCEPTED, 1, 12, 11)
    assert (new.change, new.started_ms) == (Change.OPENED, 12) and new.episode_id != old.episode_id
    assert not step(13, 0.0).onset  # one onset per departure


def test_device_episodes_are_never_renewed_when_renew_after_is_0() -> None:
    from iot_mlops.scoring.episodes import EpisodePolicy

    rules = Rules(RULES.calibration, device_episodes=EpisodePolicy(close_after=30))
    d = _two_metric_device(rules)
    onsets = []
    for t in range(1, 60):
        d.observe("a", t, LR - 20, rules)
        dec = d.observe("b", t, 0.0, rules)
        assert dec is not None and dec.superseded is None
        onsets.append(dec.onset)
    assert onsets == [True] + [False] * 58
