"""Anomaly episodes: one alarm per departure from normal. Pure, no I/O.

An episode opens at the onset (the first reading whose evidence reaches the target rate), the
readings that follow belong to it while their evidence stays rare (``hold``: a probability at
most ``target_rate ** hold``, a lower bar than the onset's, so a departure that flickers stays
one episode), and it closes after ``close_after`` ordinary readings in a row. A new onset needs
the series to have come back first.

A departure that lasts ``relearn_after`` readings is a level the series now holds: the series
relearns it (the model's context takes the real values, the channels forget the old level), so
its evidence against the *new* level goes quiet, but the episode stays open while the readings
stay far from the level it had before the onset (``hold_log_p``: the caller's evidence against
the pre-onset baseline, at a probability of at most ``target_rate ** departure_hold``, a bar
stricter than the onset's, so a slow drift away from a short history is not held). It closes
when the series is back (a valve reopened) or, after ``max_readings``, as *accepted*: the
departure is the new normal.

A device does not relearn (its series do), so its episode can outlive what it stood for: once
it has lasted ``renew_after`` readings (its series have relearnt the departure by then),
evidence that reaches the onset's bar again is a new departure, not more of the old one. The
old episode closes as accepted and a new one opens at that reading (``renews``), so a second
change inside a long device episode (a valve closed, then a pump failing) is an alarm of its
own instead of being hidden by the first.

Operators get one incident per departure; labelled benchmarks reward exactly that (the onset
counts, every further alarm outside a window costs), and the in-episode flag says "still
anomalous" for long anomalies (a valve closed for minutes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Change(StrEnum):
    NONE = "none"
    OPENED = "opened"
    RELEARN = "relearn"  # still open: the series takes the departure's level as its own
    CLOSED = "closed"  # back to normal
    ACCEPTED = "accepted"  # closed: the departure is the new normal


@dataclass(frozen=True)
class EpisodePolicy:
    close_after: int = 10
    hold: float = 0.75
    relearn_after: int = 0  # readings in one episode before the series relearns; 0 = never
    max_readings: int = 0  # readings after which an episode closes as accepted; 0 = never
    # The departure from the pre-onset level holds an episode at p <= rate ** this.
    departure_hold: float = 0.75
    # Readings after which fresh onset-level evidence opens a new episode; 0 = never. Only a
    # device's episode renews (``DeviceState``): a series relearns its departure instead.
    renew_after: int = 0

    @property
    def relearns_before_accepting(self) -> bool:
        """Whether an episode that reaches ``max_readings`` was relearnt on its way there."""
        return 0 < self.relearn_after < self.max_readings

    def __post_init__(self) -> None:
        if self.close_after < 1 or not 0.0 < self.hold <= 1.0:
            raise ValueError("close_after >= 1 and 0 < hold <= 1 required")
        if min(self.relearn_after, self.max_readings, self.renew_after) < 0:
            raise ValueError("relearn_after, max_readings and renew_after must be >= 0")


@dataclass(frozen=True)
class Onset:
    """The reading that opened an episode."""

    timestamp_ms: int
    actual: float
    predicted: float | None = None
    lower: float | None = None
    upper: float | None = None


@dataclass
class Episode:
    """One series' (or device's) episode state; ``step`` advances it by one decision."""

    open: bool = False
    started_ms: int = 0
    last_ms: int = 0  # time of the last reading that held the episode open
    readings: int = 0
    normal_run: int = 0
    peak_score: float = 0.0
    channels: set[str] = field(default_factory=set)
    onset: Onset | None = None

    def renew(
        self, key: str, log_p: float, log_rate: float, policy: EpisodePolicy, now_ms: int
    ) -> EpisodeSummary | None:
        """When this decision's evidence is a new departure (the episode has lasted
        ``renew_after`` readings and the evidence reaches the onset's bar again), close the
        open episode as accepted and return its summary; ``step`` then opens the new one."""
        if not (self.open and 0 < policy.renew_after <= self.readings and log_p <= log_rate):
            return None
        self.open = False
        return summarise(self, key, Change.ACCEPTED, now_ms)

    def step(
        self,
        onset: Onset,
        log_p: float,
        score: float,
        fired: tuple[str, ...],
        log_rate: float,
        policy: EpisodePolicy,
        hold_log_p: float | None = None,
    ) -> Change:
        """Advance by one decision. ``log_p`` opens and holds; ``hold_log_p`` (the evidence
        against the level before the onset) holds too, at the stricter ``departure_hold``."""
        if not self.open:
            if log_p > log_rate:
                return Change.NONE
            self.open, self.onset = True, onset
            self.started_ms = self.last_ms = onset.timestamp_ms
            self.readings, self.normal_run, self.peak_score = 1, 0, score
            self.channels = set(fired)
            return Change.OPENED
        self.readings += 1
        held = log_p <= policy.hold * log_rate or (
            hold_log_p is not None and hold_log_p <= policy.departure_hold * log_rate
        )
        if held:
            self.normal_run = 0
            self.last_ms = onset.timestamp_ms
            self.peak_score = max(self.peak_score, score)
            self.channels.update(fired)
        else:
            self.normal_run += 1
        if self.normal_run >= policy.close_after:
            self.open = False
            return Change.CLOSED
        if policy.max_readings and self.readings >= policy.max_readings:
            self.open = False
            return Change.ACCEPTED
        if policy.relearn_after and self.readings == policy.relearn_after:
            return Change.RELEARN
        return Change.NONE

    def id(self, key: str) -> str:
        """Stable across replicas and restarts: the series (or device) and its onset time."""
        return f"{key}@{self.started_ms}"


@dataclass(frozen=True)
class EpisodeSummary:
    """What an opened/closed event reports of an episode."""

    change: Change
    episode_id: str
    started_ms: int
    ended_ms: int | None
    onset: Onset
    peak_score: float
    readings: int
    channels: tuple[str, ...]


def summarise(ep: Episode, key: str, change: Change, now_ms: int) -> EpisodeSummary | None:
    if change in (Change.NONE, Change.RELEARN) or ep.onset is None:
        return None
    ended = None if change is Change.OPENED else now_ms
    return EpisodeSummary(
        change,
        ep.id(key),
        ep.started_ms,
        ended,
        ep.onset,
        ep.peak_score,
        ep.readings,
        tuple(sorted(ep.channels)),
    )
