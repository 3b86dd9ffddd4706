"""Device-level detection: a device's metrics combined into one decision per time step. Pure.

A device's readings arrive in log order (the key is the device, so one partition holds them
all). Each metric's scored reading brings its evidence (a log tail probability, already
calibrated per series); the device's evidence at a grid time is the harmonic mean of its
metrics' p-values at that time (Wilson 2019: valid under dependence between the metrics, and
dominated by the rarest ones, so one clearly broken sensor is enough and several weakly odd
ones add up). A time step is decided as soon as every metric the device has reported so far
has reported it, or when a later time arrives (a metric missing at that step), so decisions do
not depend on how the log is split into batches. The device's episode follows the same policy
as a series', except that it is renewed by a new departure once its series have relearnt
the old one (``EpisodePolicy.renew_after``); SKAB's labels and an operator's tickets are per
device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from iot_mlops.scoring.channels import score_of
from iot_mlops.scoring.episodes import Change, Episode, EpisodeSummary, Onset, summarise
from iot_mlops.scoring.rules import Rules


@dataclass(frozen=True)
class DeviceDecision:
    t_ms: int  # the grid time decided
    score: float
    log_p: float
    onset: bool
    in_episode: bool
    closed: bool
    metrics: tuple[str, ...]  # metrics whose evidence alone reaches the target rate
    metric_count: int  # metrics the device has reported so far
    episode: EpisodeSummary | None = None
    # The episode this decision's new onset replaced (closed as accepted), if any.
    superseded: EpisodeSummary | None = None


def harmonic_mean_log_p(log_ps: list[float]) -> float:
    """log of the harmonic mean p-value of ``exp(log_ps)``."""
    m = min(log_ps)
    s = math.log(sum(math.exp(m - lp) for lp in log_ps)) - m  # log sum 1/p
    return min(0.0, math.log(len(log_ps)) - s)


@dataclass
class DeviceState:
    device_id: str
    known: set[str] = field(default_factory=set)  # metrics this device has reported
    pending_ms: int | None = None
    pending: dict[str, float] = field(default_factory=dict)  # metric -> log p at pending_ms
    # metric -> its series' departure evidence, where rarer than its log p (in an episode)
    pending_hold: dict[str, float] = field(default_factory=dict)
    episode: Episode = field(default_factory=Episode)

    def observe(
        self, metric: str, t_ms: int, log_p: float, rules: Rules, hold_log_p: float | None = None
    ) -> DeviceDecision | None:
        """One scored reading of ``metric`` at grid time ``t_ms``; returns the decision it
        completes, if any (at most one: an earlier incomplete step, or this one).
        ``hold_log_p``: the series' evidence against its pre-onset level, in its episode."""
        self.known.add(metric)
        decided = None
        if self.pending_ms is not None and t_ms > self.pending_ms:
            decided = self._decide(rules)
        if self.pending_ms is None:
            self.pending_ms = t_ms
        if t_ms == self.pending_ms:
            self.pending[metric] = log_p
            if hold_log_p is not None and hold_log_p < log_p:
                self.pending_hold[metric] = hold_log_p
            if len(self.pending) == len(self.known) and decided is None:
                decided = self._decide(rules)
        return decided

    def _decide(self, rules: Rules) -> DeviceDecision:
        assert self.pending_ms is not None
        t, ev = self.pending_ms, self.pending
        log_p = harmonic_mean_log_p(list(ev.values()))
        score = score_of(log_p, rules.log_rate)
        fired = tuple(sorted(m for m, lp in ev.items() if lp <= rules.log_rate))
        # Only while some metric is away from its pre-onset level (no extra work otherwise).
        hold = (
            harmonic_mean_log_p([self.pending_hold.get(m, lp) for m, lp in ev.items()])
            if self.pending_hold
            else None
        )
        policy = rules.device_policy
        superseded = self.episode.renew(self.device_id, log_p, rules.log_rate, policy, t)
        change = self.episode.step(
            Onset(t, math.nan), log_p, score, fired, rules.log_rate, policy, hold
        )
        self.pending_ms, self.pending, self.pending_hold = None, {}, {}
        return DeviceDecision(
            t,
            score,
            log_p,
            change is Change.OPENED,
            self.episode.open,
            change in (Change.CLOSED, Change.ACCEPTED),
            fired,
            len(self.known),
            summarise(self.episode, self.device_id, change, t),
            superseded,
        )
