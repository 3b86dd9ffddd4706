"""The engine's batching, alignment and state rules, with a tiny deterministic stand-in model
(a pure unit; the real AutoGluon model is exercised in the detector integration tests)."""

from __future__ import annotations

import numpy as np
import pytest
from stand_ins import LastValueModel

from iot_mlops.events import Reading
from iot_mlops.scoring.calibrate import Calibration
from iot_mlops.scoring.engine import Engine
from iot_mlops.scoring.episodes import Change, EpisodePolicy
from iot_mlops.scoring.state import Outcome

pytestmark = pytest.mark.unit

STEP = 60_000
T0 = 1_795_665_600_000  # a multiple of the block size below


def reading(dev: str, step: int, value: float, jitter_ms: int = 0) -> Reading:
    return Reading(dev, "pump", "temperature", value, T0 + step * STEP + jitter_ms)


def engine(min_history: int = 3) -> tuple[Engine, LastValueModel]:
    m = LastValueModel()
    return Engine(m, min_history=min_history), m


def test_warm_up_then_scored_and_spike_flagged() -> None:
    eng, _ = engine()
    rs = [reading("a", i, 10.0) for i in range(3)] + [reading("a", 3, 10.2), reading("a", 4, 30.0)]
    out = eng.process(rs)
    assert [r.outcome for r in out] == [Outcome.WARMING_UP] * 3 + [Outcome.SCORED] * 2
    assert out[3].scored is not None and not out[3].scored.alarm
    assert out[4].scored is not None and out[4].scored.alarm and out[4].scored.score > 0.9
    assert out[4].scored.model_version == "7"
    # The spike entered the context as the forecast (10.2, the last value), not as 30.
    assert list(eng.series["a/temperature"].values)[-1] == 10.2


def test_one_model_call_per_round_for_all_series() -> None:
    eng, model = engine()
    devs = [f"d{i}" for i in range(50)]
    warm = [reading(d, s, 5.0) for s in range(3) for d in devs]
    eng.process(warm)
    assert model.calls == []
    batch = [reading(d, 3, 5.0) for d in devs]  # every series needs its first forecast
    eng.process(batch)
    assert len(model.calls) == 1 and len(set(model.calls[0].ids)) == 50


def test_forecasts_refresh_on_absolute_blocks() -> None:
    """Two engines that see the log split differently score each reading identically."""
    rs = [reading("a", i, float(i % 5)) for i in range(40)]
    e1, _ = engine()
    e2, _ = engine()
    whole = e1.process(rs)
    parts = e2.process(rs[:13]) + e2.process(rs[13:27]) + e2.process(rs[27:])
    assert [r.scored for r in whole] == [r.scored for r in parts]


def test_duplicates_late_and_jitter() -> None:
    eng, _ = engine()
    out = eng.process(
        [reading("a", 0, 1.0), reading("a", 1, 1.0, jitter_ms=2_000), reading("a", 1, 1.0),
         reading("a", 0, 1.0), reading("a", 2, 1.0)]
    )  # fmt: skip
    assert [r.outcome for r in out] == [
        Outcome.WARMING_UP, Outcome.WARMING_UP, Outcome.DUPLICATE, Outcome.LATE, Outcome.WARMING_UP,
    ]  # fmt: skip


def test_gaps_become_nan_and_long_outages_reset() -> None:
    eng, model = engine()
    eng.process([reading("a", i, 1.0) for i in range(3)])
    out = eng.process([reading("a", 10, 1.0)])  # a 7-step gap: scored against a fresh forecast
    assert out[0].outcome is Outcome.SCORED
    ctx = model.calls[-1]
    assert np.isnan(ctx.row(0)).sum() == 7 and ctx.last_ms[0] == T0 + 9 * STEP
    out = eng.process([reading("a", 100, 1.0)])  # longer than the context: start over
    assert out[0].outcome is Outcome.WARMING_UP
    assert np.isnan(list(eng.series["a/temperature"].values)).sum() == 0


def test_model_swap_drops_cached_forecasts() -> None:
    eng, _ = engine()
    eng.process([reading("a", i, 1.0) for i in range(4)])
    assert eng.series["a/temperature"].forecast is not None
    new = LastValueModel()
    new.version = "8"
    eng.set_model(new)
    assert eng.series["a/temperature"].forecast is None
    out = eng.process([reading("a", 4, 1.0)])
    assert out[0].scored is not None and out[0].scored.model_version == "8"


def test_a_departure_is_one_onset_and_the_episode_closes_after_normal_readings() -> None:
    m = LastValueModel()
    eng = Engine(m, min_history=3, episodes=EpisodePolicy(close_after=3))
    rs = [reading("a", i, 1.0) for i in range(3)]
    rs += [reading("a", 3 + i, v) for i, v in enumerate([50.0, 51.0, 50.5, 1.0, 1.0, 1.0, 1.0])]
    out = [r.scored for r in eng.process(rs)[3:]]
    assert [s.onset for s in out if s] == [True, False, False, False, False, False, False]
    assert [s.in_episode for s in out if s] == [True, True, True, True, True, False, False]
    assert out[5] is not None and out[5].closed and out[5].episode is not None
    assert out[5].episode.episode_id == f"a/temperature@{T0 + 3 * STEP}"


def test_stuck_sensor_is_flagged() -> None:
    m = LastValueModel()
    m.calibration = Calibration(threshold=1.0)
    eng = Engine(m, min_history=3, episodes=EpisodePolicy(relearn_after=5))
    wobble = [10.0, 10.5, 9.6, 10.2, 9.9, 10.4, 9.7, 10.1, 9.8, 10.3] * 3
    rs = [reading("a", i, v) for i, v in enumerate(wobble)]
    stuck = [reading("a", 30 + i, 10.1) for i in range(14)]
    out = eng.process(rs + stuck)
    flags = [r.scored.alarm for r in out[30:] if r.scored]
    held = [r.scored.in_episode for r in out[30:] if r.scored]
    # Within tolerance of the forecast, but 10 exact repeats reach the target rate (a couple
    # more with the correction for several channels): one onset, then the episode holds.
    assert not any(flags[:10]) and sum(flags) == 1 and flags.index(True) <= 12
    assert held[-1]


def test_level_shift_is_one_anomaly_then_the_new_level_is_normal() -> None:
    m = LastValueModel()
    policy = EpisodePolicy(close_after=3, relearn_after=3, max_readings=20)
    eng = Engine(m, min_history=3, episodes=policy)
    base = [reading("a", i, 10.0 + 0.1 * (i % 2)) for i in range(250)]
    shifted = [reading("a", 250 + i, 20.0 + 0.1 * (i % 2)) for i in range(40)]
    out = eng.process(base + shifted)[250:]
    flags = [bool(r.scored and r.scored.alarm) for r in out]
    held = [bool(r.scored and r.scored.in_episode) for r in out]
    # One onset at the shift. Relearnt after 3 readings, the new level raises no alarm, but
    # the episode holds while the series is away from its old level, up to max_readings:
    # then it closes as accepted, and the new level is normal.
    assert flags[0] and not any(flags[1:])
    assert all(held[:19]) and not any(held[20:])
    last = out[19].scored
    assert last is not None and last.episode is not None
    assert last.episode.change is Change.ACCEPTED


def test_a_departure_that_comes_back_closes_when_the_series_is_back() -> None:
    """A valve closed for a while: after relearning, the episode stays open while the level
    is away from the one before the onset, and closes (not accepted) once it returns."""
    m = LastValueModel()
    eng = Engine(m, min_history=3, episodes=EpisodePolicy(close_after=3, relearn_after=3))
    rs = [reading("a", i, 10.0 + 0.1 * (i % 3)) for i in range(250)]
    rs += [reading("a", 250 + i, 20.0 + 0.1 * (i % 3)) for i in range(60)]
    rs += [reading("a", 310 + i, 10.0 + 0.1 * (i % 3)) for i in range(30)]
    out = [r.scored for r in eng.process(rs)[250:]]
    assert all(s is not None for s in out)
    held = [s.in_episode for s in out if s]
    assert sum(s.onset for s in out if s) == 1 and out[0] is not None and out[0].onset
    assert all(held[:60])  # the whole departure is in the episode
    closes = [i for i, s in enumerate(out) if s and s.closed]
    assert len(closes) == 1 and 60 <= closes[0] < 60 + 8 + 3 + 2
    ep = out[closes[0]].episode if out[closes[0]] else None
    assert ep is not None and ep.change is Change.CLOSED


def test_the_settings_engine_options_score_and_flag() -> None:
    """The detector builds its engine from the settings (channels, episodes, device policy)."""
    from iot_mlops.config import Settings
    from iot_mlops.scoring.rules import engine_options

    eng = Engine(LastValueModel(), min_history=3, **engine_options(Settings()))
    assert not eng.rules.observe_only and eng.rules.device_episodes is not None
    rs = [reading("a", i, 10.0) for i in range(3)] + [reading("a", 3, 10.2), reading("a", 4, 30.0)]
    out = eng.process(rs)
    assert out[4].scored is not None and out[4].scored.alarm and out[4].scored.score > 0.9
    assert out[3].scored is not None and 0.0 < out[3].scored.score < 0.5


def test_a_model_swap_keeps_every_series_calibrated_history() -> None:
    """Issue 13 item 8: a promotion must not send every series back to its priors (a burst of
    false alarms): the channels' learnt tails and the series' window survive the swap."""
    eng, _ = engine()
    rs = [reading("a", i, 10.0 + 0.1 * (i % 7)) for i in range(300)]
    eng.process(rs)
    st = eng.series["a/temperature"]
    assert st.channels is not None and st.channels.residual.n > 200
    before = (list(st.channels.residual.ordered), list(st.values), st.observed)
    new = LastValueModel()
    new.version = "8"
    eng.set_model(new)
    after = eng.series["a/temperature"]
    assert after.channels is not None
    assert (list(after.channels.residual.ordered), list(after.values), after.observed) == before
    out = eng.process([reading("a", 300, 10.0)])
    assert out[0].outcome is Outcome.SCORED and out[0].scored is not None
    assert out[0].scored.model_version == "8" and not out[0].scored.onset


def test_the_calibrated_step_scale_sets_each_steps_interval() -> None:
    """A reading 1.5 off the forecast: inside a step whose interval the calibration widens
    (x2), outside one it narrows (x0.5); the deviation is in the scaled interval."""

    class Scaled(LastValueModel):
        calibration = Calibration(threshold=1.0, step_scale=(2.0, 0.5))

    eng = Engine(Scaled(), min_history=3)
    rs = [reading("a", i, 10.0) for i in range(4)] + [reading("a", 4, 11.5), reading("a", 5, 11.5)]
    out = eng.process(rs)
    first, second = out[4].scored, out[5].scored
    assert first is not None and second is not None
    assert (first.horizon_step, second.horizon_step) == (0, 1)
    assert (first.lower, first.upper) == (8.0, 12.0)
    assert (second.lower, second.upper) == (9.5, 10.5)
    assert first.deviation == pytest.approx(0.75) and second.deviation == pytest.approx(3.0)
