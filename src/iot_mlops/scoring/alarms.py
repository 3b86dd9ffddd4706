"""Alarm hygiene: when a run of outliers raises an alarm.

``AlarmPolicy``/``AlarmState``: minimum consecutive outliers and a per-series cooldown, as a
tiny per-series state machine.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlarmPolicy:
    """Alarm hygiene. ``min_consecutive``: outliers in a row before the first alarm;
    ``cooldown``: points after an alarm during which the series does not alarm again."""

    min_consecutive: int = 1
    cooldown: int = 0

    def __post_init__(self) -> None:
        if self.min_consecutive < 1 or self.cooldown < 0:
            raise ValueError("min_consecutive must be >= 1 and cooldown >= 0")


@dataclass
class AlarmState:
    streak: int = 0
    cooldown_left: int = 0

    def step(self, outlier: bool, policy: AlarmPolicy) -> bool:
        """Advance by one scored point; True when this point raises an alarm."""
        self.streak = self.streak + 1 if outlier else 0
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            return False
        if outlier and self.streak >= policy.min_consecutive:
            self.cooldown_left = policy.cooldown
            return True
        return False
