"""Anomaly episodes: one alarm per departure from normal. Pure, no I/O.

An episode opens at the onset (the first reading whose evidence reaches the target rate), the
readings that follow belong to it while their evidence stays rare (``hold``: a probability at
most ``target_rate ** hold``, a lower bar than the onset's, so a departure that flickers stays
one episode), and it closes after ``close_after`` ordinary readings in a row. A new onset needs
the series to have come back first. An episode that lasts ``accept_after`` readings is taken to
be the new normal (a level that stays): it closes as *accepted* and the series relearns.

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
    CLOSED = "closed"  # back to normal
    ACCEPTED = "accepted"  # closed: the departure is the new normal


@dataclass(frozen=True)
class EpisodePolicy:
    close_after: int = 10
    hold: float = 0.75
    accept_after: int = 0  # readings in one episode before it is the new normal; 0 = never

    def __post_init__(self) -> None:
        if self.close_after < 1 or not 0.0 < self.hold <= 1.0 or self.accept_after < 0:
            raise ValueError("close_after >= 1, 0 < hold <= 1 and accept_after >= 0 required")


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

    def step(
        self,
        onset: Onset,
        log_p: float,
        score: float,
        fired: tuple[str, ...],
        log_rate: float,
        policy: EpisodePolicy,
    ) -> Change:
        if not self.open:
            if log_p > log_rate:
                return Change.NONE
            self.open, self.onset = True, onset
            self.started_ms = self.last_ms = onset.timestamp_ms
            self.readings, self.normal_run, self.peak_score = 1, 0, score
            self.channels = set(fired)
            return Change.OPENED
        self.readings += 1
        if log_p <= policy.hold * log_rate:
            self.normal_run = 0
            self.last_ms = onset.timestamp_ms
            self.peak_score = max(self.peak_score, score)
            self.channels.update(fired)
        else:
            self.normal_run += 1
        if self.normal_run >= policy.close_after:
            self.open = False
            return Change.CLOSED
        if policy.accept_after and self.readings >= policy.accept_after:
            self.open = False
            return Change.ACCEPTED
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
    if change is Change.NONE or ep.onset is None:
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
