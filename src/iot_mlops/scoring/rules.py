"""The decision rules a series is scored under: the model's calibration, the channels and the
episode policy, bundled so that training, evaluation and the detector pass one value."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from iot_mlops.scoring.calibrate import Calibration
from iot_mlops.scoring.channels import ChannelConfig
from iot_mlops.scoring.episodes import EpisodePolicy


@dataclass(frozen=True)
class Rules:
    calibration: Calibration
    channels: ChannelConfig = field(default_factory=ChannelConfig)
    episodes: EpisodePolicy = field(default_factory=EpisodePolicy)
    # Device episodes (several metrics combined); None: the series' policy.
    device_episodes: EpisodePolicy | None = None
    # Score every reading but never flag one (training collects clean deviations this way).
    observe_only: bool = False

    @property
    def device_policy(self) -> EpisodePolicy:
        return self.device_episodes or self.episodes

    @property
    def log_rate(self) -> float:
        return math.log(self.calibration.target_false_alarm_rate)


def engine_options(settings: Any) -> dict[str, Any]:
    """The engine's channel and episode configuration from the one settings object."""
    channels = tuple(c.strip() for c in settings.channels.split(",") if c.strip())
    episodes = EpisodePolicy(
        close_after=settings.episode_close_after,
        hold=settings.episode_hold,
        relearn_after=settings.regime_relearn_after,
        max_readings=settings.episode_max_readings,
        departure_hold=settings.episode_departure_hold,
    )
    return {
        "channels": ChannelConfig(
            channels=channels,
            window=settings.tail_window,
            min_points=settings.tail_min_points,
            conservative=settings.tail_conservative,
            season_max_period=settings.season_max_period,
        ),
        "episodes": episodes,
        # A device does not relearn (its series do); it closes after its own run of steps,
        # and fresh rare evidence once its series have relearnt (regime_relearn_after
        # readings) is a new departure: the device's episode is renewed then.
        "device_episodes": replace(
            episodes,
            close_after=settings.device_episode_close_after,
            relearn_after=0,
            renew_after=settings.regime_relearn_after,
        ),
    }
