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
