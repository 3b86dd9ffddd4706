"""Synthetic readings in the simulator's schema, shared by the forecaster, training and registry
tests, and one series' channels run over a synthetic stream (the scoring tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from iot_mlops.scoring.calibrate import Calibration
from iot_mlops.scoring.channels import ChannelConfig, SeriesChannels

AMPLITUDE = 5.0
PERIOD = 60


def synthetic_readings(
    n_devices: int = 2,
    metrics: tuple[str, ...] = ("temperature", "pressure"),
    n: int = 400,
    seed: int = 0,
    spikes: int = 0,
    step: str = "1min",
    start: str = "2026-11-20",
) -> pd.DataFrame:
    """Readings in the simulator's schema: seasonal (period 60 steps) + noise, with optional
    labelled spikes. ``value(device, metric, t)`` is deterministic apart from the noise."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, periods=n, freq=step, tz="UTC").astype("datetime64[ms, UTC]")
    parts = []
    for d in range(n_devices):
        for j, m in enumerate(metrics):
            y = clean_signal(d, j, np.arange(n)) + rng.normal(0, 0.3, n)
            label = np.zeros(n, dtype=bool)
            if spikes:
                at = rng.choice(np.arange(30, n - 2), spikes, replace=False)
                y[at] += 8 * AMPLITUDE
                label[at] = True
            parts.append(
                pd.DataFrame(
                    {
                        "device_id": f"pump-{d:03d}",
                        "device_type": "pump",
                        "metric_name": m,
                        "metric_value": y,
                        "timestamp": ts,
                        "is_anomaly": label,
                        "anomaly_kind": np.where(label, "spike", None),
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def clean_signal(device: int, metric: int, t: np.ndarray) -> np.ndarray:
    return 50 + 10 * device + 5 * metric + AMPLITUDE * np.sin(2 * np.pi * t / PERIOD + device)


def fired_channels(
    values: np.ndarray, devs: np.ndarray, config: ChannelConfig, start: int
) -> set[str]:
    """The channels of one series that fired from reading ``start`` on, given each reading's
    value and forecast deviation."""
    ch = SeriesChannels.create(config, Calibration(threshold=1.5, target_false_alarm_rate=0.002))
    fired: set[str] = set()
    for i, (v, d) in enumerate(zip(values, devs, strict=True)):
        ev = ch.observe(float(v), float(d))
        ch.learn(float(v))
        if i >= start:
            fired.update(ev.fired)
    return fired
