"""Silent sensors and idle-series expiry in the engine, on the log's own clock (a pure unit with
the numpy stand-in model)."""

from __future__ import annotations

from collections import Counter

import pytest
from stand_ins import LastValueModel

from iot_mlops.events import Reading
from iot_mlops.scoring.engine import Engine
from iot_mlops.scoring.liveness import LivenessConfig, LivenessEvent, Silence
from iot_mlops.scoring.state import Outcome

pytestmark = pytest.mark.unit

STEP = 60_000
T0 = 1_795_665_600_000
SILENT, EXPIRE = 300, 900  # seconds: 5 and 15 steps


def new_engine(**kw: float) -> Engine:
    cfg = LivenessConfig(kw.get("silent", SILENT), kw.get("expire", EXPIRE))
    return Engine(LastValueModel(), min_history=3, liveness=cfg)


def reading(dev: str, step: int, metric: str = "temperature") -> Reading:
    return Reading(dev, "pump", metric, 10.0 + step % 3, T0 + step * STEP)


def fleet(steps: range, devices: dict[str, range]) -> list[Reading]:
    """Readings step by step; each device reports only at the steps of its range."""
    return [reading(d, t) for t in steps for d, live in devices.items() if t in live]


def run(eng: Engine, rs: list[Reading], cut: int, partition: int = 0) -> list[LivenessEvent]:
    """Feed ``rs`` in batches of ``cut`` (log time = event time), sweeping after each."""
    events: list[LivenessEvent] = []
    for i in range(0, len(rs), cut):
        part = rs[i : i + cut]
        res = eng.process(part, times=[(partition, r.timestamp_ms) for r in part])
        events += [ev for r in res for ev in r.liveness] + eng.sweep()
    return events


def kinds(events: list[LivenessEvent]) -> list[tuple[str, str]]:
    return [(e.kind.value, e.device_id) for e in events]


def test_a_series_that_stops_is_silent_once_and_resumes_once() -> None:
    # "a" misses steps 10..29 while "b" keeps the partition's log moving.
    rs = fleet(range(40), {"a": range(0, 10), "b": range(40)})
    rs += fleet(range(30, 40), {"a": range(30, 40)})
    rs.sort(key=lambda r: r.timestamp_ms)
    events = run(new_engine(expire=3600), rs, cut=7)
    assert kinds(events) == [("silent", "a"), ("resumed", "a")]
    silent, resumed = events
    assert silent.episode_id == resumed.episode_id == f"a/temperature@silent@{T0 + 9 * STEP}"
    assert silent.last_ms == T0 + 9 * STEP and silent.since_ms == T0 + 9 * STEP + SILENT * 1000
    assert silent.device_type == "pump" and silent.metric_name == "temperature"
    assert resumed.resumed_ms == resumed.ended_ms == T0 + 30 * STEP


@pytest.mark.parametrize("cut", [1, 5, 13, 1000])
def test_events_do_not_depend_on_how_the_log_is_batched(cut: int) -> None:
    rs = fleet(range(60), {"a": [*range(0, 8), *range(20, 30), *range(52, 60)], "b": range(60)})
    reference = run(new_engine(), rs, cut=3)
    events = run(new_engine(), rs, cut=cut)
    assert Counter(events) == Counter(reference)
    assert Counter(kinds(reference)) == Counter(
        {("silent", "a"): 2, ("resumed", "a"): 1, ("expired", "a"): 1}
    )


def test_an_expired_series_is_dropped_with_its_device_and_warms_up_again() -> None:
    eng = new_engine()
    rs = fleet(range(40), {"a": range(0, 10), "b": range(40)})
    events = run(eng, rs, cut=10)
    assert kinds(events) == [("silent", "a"), ("expired", "a")]
    assert events[1].ended_ms == T0 + 9 * STEP + EXPIRE * 1000
    assert "a/temperature" not in eng.series and "a" not in eng._device_series
    assert "b/temperature" in eng.series
    back = eng.process([reading("a", 40)], times=[(0, T0 + 40 * STEP)])
    assert back[0].outcome is Outcome.WARMING_UP and back[0].liveness == ()


def test_a_device_stays_while_one_of_its_series_reports() -> None:
    eng = new_engine()
    rs = [reading("a", t, "temperature") for t in range(5)]
    rs += [reading("a", t, "pressure") for t in range(30)]
    rs.sort(key=lambda r: r.timestamp_ms)
    run(eng, rs, cut=4)
    assert "a/temperature" not in eng.series and "a/pressure" in eng.series
    assert eng.devices.get("a") is not None and eng._device_series["a"] == 1


def test_each_partition_has_its_own_clock() -> None:
    eng = new_engine()
    run(eng, fleet(range(3), {"a": range(3)}), cut=10, partition=0)
    # Partition 1's log runs an hour on: partition 0's series are not judged by it.
    events = run(eng, fleet(range(60), {"z": range(60)}), cut=10, partition=1)
    assert events == [] and eng.silent() == 0
    assert eng.clocks == {0: T0 + 2 * STEP, 1: T0 + 59 * STEP}


def test_late_and_duplicate_readings_count_as_reporting() -> None:
    eng = new_engine(expire=3600)
    rs = fleet(range(20), {"a": range(20), "b": range(20)})
    run(eng, rs, cut=5)
    # "a" resends an old reading at log time step 22: alive, not silent.
    late = eng.process([reading("a", 3)], times=[(0, T0 + 22 * STEP)])
    assert late[0].outcome is Outcome.LATE
    more = fleet(range(20, 27), {"b": range(20, 27)})
    assert run(eng, more, cut=50) == []


def test_without_log_times_nothing_is_tracked() -> None:
    """Training's replay and evaluate's engine calls pass no log times: no liveness."""
    eng = new_engine()
    eng.process(fleet(range(60), {"a": range(5), "b": range(60)}))
    assert eng.sweep() == [] and "a/temperature" in eng.series


def test_dropping_a_partition_forgets_its_clock() -> None:
    """A rewound partition is rebuilt from its committed log: the aborted batch's log time
    must not survive (it would mark series silent in the rebuild, whose events are never
    published, and the redo would then not publish them either)."""
    eng = new_engine()
    run(eng, fleet(range(3), {"a": range(3)}), cut=10)
    eng.drop(["a/temperature"], clocks=[0])
    assert eng.clocks == {} and eng.series == {} and eng._device_series == {}


def test_default_thresholds_follow_the_model_grid() -> None:
    assert LivenessConfig().thresholds_ms(60_000, 256) == (600_000, 256 * 60_000)
    # Expiry is at least twice the silence, and always after it.
    assert LivenessConfig().thresholds_ms(60_000, 16) == (600_000, 1_200_000)
    assert LivenessConfig(600, 60).thresholds_ms(60_000, 16) == (600_000, 660_000)
    assert Silence.SILENT.value == "silent"
