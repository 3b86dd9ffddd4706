"""The scoring engine: per-series state plus batched forecasting. No Kafka here.

``Engine.process`` takes a batch of readings (in log order) and returns one result per
reading. Each series' readings are scored in order against its cached forecast; every series
whose forecast is used up joins one model call for all of them, then scoring resumes. A
series with ``n`` readings in a batch needs at most ``ceil(n / horizon)`` such rounds, and
each round is a single model call however many series it covers.

Forecast refreshes are aligned to blocks of ``prediction_length`` steps on the absolute time
grid, so a reading is scored against the same forecast whichever replica scores it and
however the log was split into batches (which makes restarts and rebalances reproduce the
decisions of an uninterrupted run).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from iot_mlops.events import Reading
from iot_mlops.model.batch import ContextBatch, ForecastBatch, step_ms
from iot_mlops.scoring.calibrate import Calibration
from iot_mlops.scoring.channels import ChannelConfig
from iot_mlops.scoring.device import DeviceDecision, DeviceState
from iot_mlops.scoring.episodes import EpisodePolicy
from iot_mlops.scoring.liveness import (
    LivenessConfig,
    LivenessEvent,
    Presence,
    Silence,
    check,
    report,
)
from iot_mlops.scoring.rules import Rules
from iot_mlops.scoring.state import Forecast, Outcome, Scored, SeriesState


class ForecasterLike(Protocol):
    """What the engine needs of a model (``iot_mlops.model.forecaster.Forecaster`` provides it)."""

    version: str | None
    freq: str
    prediction_length: int
    context_length: int
    calibration: Calibration

    def forecast(self, context: ContextBatch) -> ForecastBatch: ...


class Point(Protocol):
    """What the engine reads of a reading (``iot_mlops.events.Reading`` is one; training's
    replay has its own)."""

    @property
    def series_id(self) -> str: ...
    @property
    def device_id(self) -> str: ...
    @property
    def metric_name(self) -> str: ...
    @property
    def metric_value(self) -> float: ...
    @property
    def timestamp_ms(self) -> int: ...


@dataclass(frozen=True)
class Result:
    reading: Reading | Point
    outcome: Outcome
    scored: Scored | None = None
    device: DeviceDecision | None = None  # a device-level decision this reading completed
    # Its series fell silent (found just now), expired or resumed with this reading.
    liveness: tuple[LivenessEvent, ...] = ()


LogTime = tuple[Hashable, int]  # (clock: the reading's partition, its log time in ms)


@dataclass
class _Batch:
    """One ``process`` call's readings and progress."""

    readings: Sequence[Reading | Point]
    results: list[Result | None]
    queues: dict[str, list[int]]  # per series, the indices of its readings in batch order
    cursor: dict[str, int]
    times: Sequence[LogTime] | None = None
    before: list[int] = field(default_factory=list)  # its clock's log time before reading i
    checked: dict[str, int] = field(default_factory=dict)  # readings liveness has seen
    live: dict[int, list[LivenessEvent]] = field(default_factory=dict)


class Engine:
    def __init__(
        self,
        model: ForecasterLike,
        min_history: int = 32,
        on_model_call: Callable[[int, float], None] = lambda _n, _s: None,
        channels: ChannelConfig | None = None,
        episodes: EpisodePolicy | None = None,
        observe_only: bool = False,
        device_episodes: EpisodePolicy | None = None,
        liveness: LivenessConfig | None = None,
    ) -> None:
        self.liveness = liveness
        self.clocks: dict[Hashable, int] = {}  # per partition, the newest log time seen
        self._swept: dict[Hashable, int] = {}  # per partition, the step last swept at
        self._device_series: dict[str, int] = {}  # series held per device
        self.channel_config = channels or ChannelConfig()
        self.episode_policy = episodes or EpisodePolicy()
        self.observe_only = observe_only
        self.device_episodes = device_episodes
        self.min_history = min_history
        self.on_model_call = on_model_call
        self.series: dict[str, SeriesState] = {}
        self.devices: dict[str, DeviceState] = {}
        self.set_model(model)

    def set_model(self, model: ForecasterLike) -> None:
        """Swap the model between batches. Cached forecasts came from the old model, so they
        are dropped: every series refreshes with the new one at its next reading."""
        self.model = model
        self.step_ms = step_ms(model.freq)
        self.horizon = model.prediction_length
        self.calibration = model.calibration
        self.silent_ms, self.expire_ms = (
            self.liveness.thresholds_ms(self.step_ms, model.context_length)
            if self.liveness is not None
            else (0, 0)
        )
        self.rules = Rules(
            model.calibration,
            channels=self.channel_config,
            episodes=self.episode_policy,
            device_episodes=self.device_episodes,
            observe_only=self.observe_only,
        )
        # Channel histories are kept: deviations are in interval units whatever the model, so
        # a swap does not send every series back to warm-up (a burst of false alarms).
        for st in self.series.values():
            st.forecast = None
            if st.step_ms != self.step_ms or st.context_length != model.context_length:
                # A model on another grid or context length: rebuild the window from scratch.
                st.step_ms = self.step_ms
                st.context_length = model.context_length
                st.values = type(st.values)(
                    list(st.values)[-model.context_length :], maxlen=model.context_length
                )

    @property
    def version(self) -> str:
        return str(self.model.version)

    def warming_up(self) -> int:
        return sum(1 for st in self.series.values() if st.observed < self.min_history)

    def silent(self) -> int:
        return sum(1 for st in self.series.values() if st.presence and st.presence.silent)

    def drop(self, keys: Sequence[str], clocks: Sequence[Hashable] = ()) -> None:
        """Forget series (and their devices) and the log time of ``clocks``: their partition
        moved to another replica (or is rebuilt after an abort)."""
        for k in keys:
            st = self._forget(k)
            if st is not None:
                self.devices.pop(st.device_id, None)
        for c in clocks:
            self.clocks.pop(c, None)
            self._swept.pop(c, None)

    def _forget(self, key: str) -> SeriesState | None:
        """Drop a series; its device too once none of the device's series is left."""
        st = self.series.pop(key, None)
        if st is not None:
            left = self._device_series.pop(st.device_id, 1) - 1
            if left > 0:
                self._device_series[st.device_id] = left
            else:
                self.devices.pop(st.device_id, None)
        return st

    def _state(self, key: str, device_id: str = "") -> SeriesState:
        st = self.series.get(key)
        if st is None:
            st = SeriesState(self.step_ms, self.model.context_length, key, device_id or key)
            self.series[key] = st
            self._device_series[st.device_id] = self._device_series.get(st.device_id, 0) + 1
        return st

    def prime(self, key: str, last_ms: int, values: np.ndarray) -> None:
        """Start a series from known history (grid values ending at ``last_ms``; NaN = gap),
        without scoring it: training's replay starts where the fit data ends."""
        st = self._state(key)
        st.values.clear()
        st.values.extend(float(v) for v in values[-st.context_length :])
        st.last_ms = last_ms
        st.observed = int(np.isfinite(values).sum())
        st.forecast = None

    def process(
        self,
        readings: Sequence[Reading | Point],
        times: Sequence[LogTime] | None = None,
    ) -> list[Result]:
        """Score a batch; one result per reading, in input order, each under its
        ``series_id``. ``times`` gives each reading's (partition, log time), which drives
        liveness (an engine built with ``liveness``); without it, silence and expiry are not
        tracked."""
        results: list[Result | None] = [None] * len(readings)
        queues: dict[str, list[int]] = {}
        for i, r in enumerate(readings):
            queues.setdefault(r.series_id, []).append(i)
        b = _Batch(readings, results, queues, dict.fromkeys(queues, 0))
        if self.liveness is not None and times is not None:
            b.times, b.before = times, self._advance_clocks(times)
        pending = list(queues)
        while pending:
            need = [k for k in pending if not self._advance(k, b)]
            if need:
                self._refresh(need)
            pending = need
        for i, events in b.live.items():
            res = results[i]
            assert res is not None
            results[i] = replace(res, liveness=tuple(events))
        return self._decide_devices([r for r in results if r is not None])

    def _advance_clocks(self, times: Sequence[LogTime]) -> list[int]:
        """Each reading's clock before it (in log order), and the clocks moved past the batch."""
        before = []
        for clock, log_ms in times:
            now = self.clocks.get(clock, log_ms)
            before.append(now)
            self.clocks[clock] = max(now, log_ms)
        return before

    def _step_of(self, log_ms: int) -> int:
        """Log time as liveness reads it: to the model's grid step, so a sweep is due only
        when a partition's clock enters a new step (once a step, not once a batch)."""
        return log_ms - log_ms % self.step_ms

    def sweep(self) -> list[LivenessEvent]:
        """After a batch: series whose partition's log has moved past them fall silent or
        expire (expired ones are dropped). Deterministic: a function of the log so far."""
        if self.liveness is None:
            return []
        now = {c: self._step_of(t) for c, t in self.clocks.items()}
        due = {c: t for c, t in now.items() if self._swept.get(c) != t}
        if not due:
            return []  # every series was checked at these times and has only reported since
        self._swept.update(due)
        out: list[LivenessEvent] = []
        for key, st in self.series.items():
            p = st.presence
            if p is None or p.clock not in due:
                continue
            idle = due[p.clock] - p.seen_ms
            if idle < self.silent_ms or (p.silent and idle < self.expire_ms):
                continue  # nothing due: the common case, kept cheap
            out.extend(check(p, key, st.device_id, due[p.clock], self.silent_ms, self.expire_ms))
        for ev in out:
            if ev.kind is Silence.EXPIRED:
                self._forget(ev.series_id)
        return out

    def _present(self, key: str, i: int, b: _Batch) -> SeriesState:
        """Liveness just before reading ``i`` of series ``key``: due silence or expiry (a
        series back after expiry starts afresh), then its return. The state to score it on."""
        assert b.times is not None
        r = b.readings[i]
        clock, log_ms = b.times[i]
        st = self.series.get(key)
        live = b.live.setdefault(i, [])
        if st is not None and st.presence is not None:
            now = self._step_of(b.before[i])
            live += check(st.presence, key, st.device_id, now, self.silent_ms, self.expire_ms)
            if live and live[-1].kind is Silence.EXPIRED:
                self._forget(key)
                st = None
        if st is None:
            st = self._state(key, r.device_id)
        if st.presence is None:
            st.presence = Presence(clock, log_ms, r.timestamp_ms,
                                   getattr(r, "device_type", ""), r.metric_name)  # fmt: skip
        st.presence.clock = clock
        back = report(st.presence, key, st.device_id, log_ms, r.timestamp_ms, self.silent_ms)
        if back is not None:
            live.append(back)
        if not live:
            del b.live[i]
        return st

    def _advance(self, key: str, b: _Batch) -> bool:
        """Score ``key``'s readings from its cursor on; False when it needs a forecast first."""
        queue = b.queues[key]
        st = self._state(key, b.readings[queue[0]].device_id)
        while b.cursor[key] < len(queue):
            i = queue[b.cursor[key]]
            r = b.readings[i]
            if b.times is not None and b.checked.get(key, 0) <= b.cursor[key]:
                # Once per reading: a reading waiting for a forecast is visited again.
                st = self._present(key, i, b)
                b.checked[key] = b.cursor[key] + 1
            grid = st.align(r.timestamp_ms)
            outcome = st.classify(grid, self.min_history)
            if outcome is Outcome.NEEDS_FORECAST:
                st.fill_gap_before(grid)
                outcome = st.classify(grid, self.min_history)
            if outcome is Outcome.NEEDS_FORECAST:
                return False
            scored = None
            if outcome is Outcome.SCORED:
                scored = st.score(grid, r.metric_value, self.rules)
            elif outcome is Outcome.WARMING_UP:
                st.warm(grid, r.metric_value, self.rules)
            b.results[i] = Result(r, outcome, scored)
            b.cursor[key] += 1
        return True

    def _decide_devices(self, results: list[Result]) -> list[Result]:
        """The device-level pass, in log order (per device, the order its readings arrived)."""
        out = []
        for res in results:
            sc = res.scored
            if sc is not None:
                r = res.reading
                dev = self.devices.get(r.device_id)
                if dev is None:
                    dev = self.devices[r.device_id] = DeviceState(r.device_id)
                decision = dev.observe(
                    r.metric_name, sc.grid_ms, sc.log_p, self.rules, sc.hold_log_p
                )
                if decision is not None:
                    res = replace(res, device=decision)
            out.append(res)
        return out

    def _refresh(self, keys: list[str]) -> None:
        """One model call for every series in ``keys``."""
        rows, last = [], []
        for key in keys:
            first_ms, vals = self.series[key].context()
            rows.append(vals)
            last.append(first_ms + (len(vals) - 1) * self.step_ms)
        context = ContextBatch.from_rows(keys, last, rows, self.step_ms)
        t0 = time.perf_counter()
        fc = self.model.forecast(context)
        self.on_model_call(len(keys), time.perf_counter() - t0)
        if fc.ids != context.ids:
            raise RuntimeError("model returned forecasts for other series or in another order")
        cal = self.calibration
        median, lower, upper = (
            fc.median, fc.quantile(cal.lower_quantile), fc.quantile(cal.upper_quantile)
        )  # fmt: skip
        if cal.step_scale:
            # The calibrated interval: each horizon step's half-widths times its factor.
            k = np.asarray(cal.scale_at(fc.horizon))
            lower, upper = median - (median - lower) * k, median + (upper - median) * k
        block = self.horizon * self.step_ms
        version = self.version
        for i, key in enumerate(keys):
            start = int(fc.start_ms[i])
            # Usable up to the end of the current absolute block (see module docstring).
            usable = max(1, min(fc.horizon, (block - start % block) // self.step_ms))
            self.series[key].forecast = Forecast(
                start_ms=start,
                step_ms=self.step_ms,
                median=median[i, :usable].tolist(),
                lower=lower[i, :usable].tolist(),
                upper=upper[i, :usable].tolist(),
                model_version=version,
            )
