"""One contract run over every scoring stage (in the spirit of River's ``check_estimator``):
the tail model, the channels, the episode rule, the device aggregation and the engine that
composes them. Each stage, fed a keyed stream of heavy-tailed, bursty input, must give one
output per input in input order, the same outputs on a second run, the same outputs for a key
whatever other keys are interleaved with it (and, for the engine, however the stream is cut
into batches), and the same outputs after its state is saved and loaded mid-stream (what a
state snapshot relies on)."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from stand_ins import LastValueModel

from iot_mlops.events import Reading
from iot_mlops.scoring.calibrate import Calibration
from iot_mlops.scoring.channels import ChannelConfig, SeriesChannels
from iot_mlops.scoring.device import DeviceState
from iot_mlops.scoring.engine import Engine
from iot_mlops.scoring.episodes import Episode, EpisodePolicy, Onset
from iot_mlops.scoring.rules import Rules
from iot_mlops.scoring.tail import TailModel

pytestmark = pytest.mark.unit

CAL = Calibration(threshold=2.0, target_false_alarm_rate=0.01)
RULES = Rules(CAL, channels=ChannelConfig(window=200, min_points=20))
STEP, T0 = 60_000, 1_795_665_600_000


def heavy(rng: np.random.Generator, n: int) -> np.ndarray:
    """Student-t noise with bursts (a quiet stretch, then a run of large values)."""
    x = rng.standard_t(2.5, n)
    burst = rng.choice(n - 15, size=3, replace=False)
    for b in burst:
        x[b : b + 10] += rng.choice([-1, 1]) * 12
    return x


@dataclass
class Stage:
    """Per key a state made by ``make``; ``step(state, event)`` gives the event's output."""

    make: Callable[[str], Any]
    step: Callable[[Any, Any], Any]
    events: Callable[[np.random.Generator, str, int], list[Any]]


def _tail_events(rng: np.random.Generator, _key: str, n: int) -> list[Any]:
    return [abs(float(v)) for v in heavy(rng, n)]


def _tail_step(t: TailModel, x: float) -> float:
    out = t.log_sf(x)
    t.update(x)
    return out


def _channel_events(rng: np.random.Generator, _key: str, n: int) -> list[Any]:
    dev = heavy(rng, n)
    value = 50 + np.cumsum(rng.normal(0, 0.1, n)) + dev
    value[n // 2 : n // 2 + 15] = 42.0  # stuck
    return list(zip(value.tolist(), dev.tolist(), strict=True))


def _channel_step(c: SeriesChannels, ev: tuple[float, float]) -> Any:
    out = c.observe(*ev)
    c.learn(ev[0])
    return out


def _episode_events(rng: np.random.Generator, _key: str, n: int) -> list[Any]:
    log_p = -np.abs(heavy(rng, n))
    return [(T0 + i * STEP, float(lp)) for i, lp in enumerate(log_p)]


def _episode_step(e: Episode, ev: tuple[int, float]) -> Any:
    t, lp = ev
    score = lp / (lp + RULES.log_rate) if lp < 0 else 0.0
    return e.step(Onset(t, 0.0), lp, score, (), RULES.log_rate, RULES.episodes), e.id("k")


def _device_events(rng: np.random.Generator, _key: str, n: int) -> list[Any]:
    log_p = -np.abs(heavy(rng, 3 * n))
    return [
        (m, T0 + (i // 3) * STEP, float(log_p[i]))
        for i, m in zip(range(3 * n), ["a", "b", "c"] * n, strict=True)
    ]


STAGES = {
    "tail": Stage(lambda _k: TailModel(window=200, min_points=20), _tail_step, _tail_events),
    "channels": Stage(
        lambda _k: SeriesChannels.create(RULES.channels, CAL), _channel_step, _channel_events
    ),
    "episodes": Stage(lambda _k: Episode(), _episode_step, _episode_events),
    "device": Stage(DeviceState, lambda d, ev: d.observe(*ev, RULES), _device_events),
}


def stream(stage: Stage, keys: list[str], n: int = 400) -> list[tuple[str, Any]]:
    """Every key's events, interleaved at random but in order per key."""
    rng = np.random.default_rng(11)
    per_key = {k: stage.events(rng, k, n) for k in keys}
    order = rng.permutation(np.repeat(np.arange(len(keys)), [len(v) for v in per_key.values()]))
    cursor = dict.fromkeys(keys, 0)
    out = []
    for i in order:
        k = keys[i]
        out.append((k, per_key[k][cursor[k]]))
        cursor[k] += 1
    return out


def run(stage: Stage, events: list[tuple[str, Any]], states: dict[str, Any] | None = None):
    states = {} if states is None else states
    outs = []
    for k, ev in events:
        if k not in states:
            states[k] = stage.make(k)
        outs.append(stage.step(states[k], ev))
    return outs, states


def same(a: Any, b: Any) -> bool:
    # repr: exact floats, and NaN equals NaN.
    return repr(a) == repr(b)


@pytest.mark.parametrize("name", list(STAGES))
def test_one_output_per_input_and_deterministic(name: str) -> None:
    stage = STAGES[name]
    events = stream(stage, ["k1", "k2", "k3"])
    first, _ = run(stage, events)
    second, _ = run(stage, events)
    assert len(first) == len(events)
    assert same(first, second)
    assert any(o is not None for o in first)


@pytest.mark.parametrize("name", list(STAGES))
def test_a_key_does_not_depend_on_the_keys_beside_it(name: str) -> None:
    stage = STAGES[name]
    events = stream(stage, ["k1", "k2", "k3"])
    together, _ = run(stage, events)
    for key in ("k1", "k3"):
        mine = [ev for ev in events if ev[0] == key]
        alone, _ = run(stage, mine)
        assert same(alone, [o for o, ev in zip(together, events, strict=True) if ev[0] == key])


@pytest.mark.parametrize("name", list(STAGES))
def test_same_outputs_after_save_and_load(name: str) -> None:
    stage = STAGES[name]
    events = stream(stage, ["k1", "k2"])
    whole, _ = run(stage, events)
    cut = len(events) * 3 // 5
    head, states = run(stage, events[:cut])
    restored = pickle.loads(pickle.dumps(states))
    tail, _ = run(stage, events[cut:], restored)
    assert same(head + tail, whole)


def test_the_tail_model_ranks_a_heavy_tailed_series() -> None:
    """Scores that rank: no mass at one value on a heavy-tailed, bursty statistic."""
    t = TailModel(window=2000, min_points=100)
    x = np.abs(heavy(np.random.default_rng(5), 6000))
    outs = [_tail_step(t, float(v)) for v in x][100:]
    top = max(outs, key=lambda v: -v)
    assert sum(1 for v in outs if v == top) / len(outs) < 0.001
    assert all(math.isfinite(v) and v <= 0 for v in outs)


# --- the engine, which composes every stage ----------------------------------------------------


def engine_readings(n_series: int = 6, steps: int = 160) -> list[Reading]:
    rng = np.random.default_rng(3)
    out = []
    for step in range(steps):
        for s in range(n_series):
            for metric in ("temperature", "pressure"):
                if rng.random() < 0.05:
                    continue  # gaps
                v = 20 + s + math.sin(step / 9) + float(heavy(rng, 20)[0]) * 0.2
                if step in (90, 91, 92) and s % 2:
                    v += 25  # an episode on some devices
                out.append(Reading(f"d{s}", "pump", metric, v, T0 + step * STEP + s * 7))
    return out


def new_engine() -> Engine:
    return Engine(
        LastValueModel(),
        min_history=3,
        channels=ChannelConfig(window=200, min_points=20),
        episodes=EpisodePolicy(close_after=3),
        device_episodes=EpisodePolicy(close_after=3),
    )


def engine_run(batches: list[list[Reading]], eng: Engine | None = None) -> list[Any]:
    eng = eng or new_engine()
    return [(r.reading, r.outcome, r.scored, r.device) for b in batches for r in eng.process(b)]


def cuts(rs: list[Reading], sizes: list[int]) -> list[list[Reading]]:
    out, i, k = [], 0, 0
    while i < len(rs):
        out.append(rs[i : i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1
    return out


def test_engine_outputs_in_order_deterministic_and_independent_of_batching() -> None:
    rs = engine_readings()
    whole = engine_run([rs])
    assert [o[0] for o in whole] == rs
    assert same(whole, engine_run([rs]))
    assert any(o[2] is not None and o[2].onset for o in whole)
    assert any(o[3] is not None for o in whole)
    for sizes in ([1], [7, 300, 13], [500]):
        assert same(engine_run(cuts(rs, sizes)), whole), sizes


def test_engine_series_do_not_depend_on_other_devices() -> None:
    rs = engine_readings()
    whole = engine_run([rs])
    mine = [r for r in rs if r.device_id == "d1"]
    assert same(engine_run([mine]), [o for o in whole if o[0].device_id == "d1"])


def test_engine_state_saved_and_loaded_mid_stream() -> None:
    rs = engine_readings()
    whole = engine_run([rs])
    cut = len(rs) * 2 // 3
    eng = new_engine()
    head = engine_run([rs[:cut]], eng)
    restored = new_engine()
    restored.series, restored.devices = pickle.loads(pickle.dumps((eng.series, eng.devices)))
    assert same(head + engine_run([rs[cut:]], restored), whole)
