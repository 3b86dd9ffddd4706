"""The simulated fleet: device types, their metrics and each series' signal parameters.

Deterministic for a seed: a device's parameters come from an RNG keyed by (seed, device
index) only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iot_mlops.errors import ConfigError

DAY_S = 86_400

# Device types and their metrics: (name, nominal level, nominal noise sigma). Levels sit far
# enough above zero that no cycle or anomaly drives a physically positive quantity negative.
DEVICE_TYPES: dict[str, tuple[tuple[str, float, float], ...]] = {
    "pump": (
        ("temperature", 55.0, 0.3),
        ("pressure", 6.0, 0.04),
        ("vibration", 2.5, 0.03),
        ("flow_rate", 120.0, 0.8),
    ),
    "compressor": (
        ("temperature", 80.0, 0.4),
        ("pressure", 8.5, 0.05),
        ("vibration", 4.0, 0.05),
        ("power", 15.0, 0.1),
    ),
    "hvac": (
        ("temperature", 21.0, 0.1),
        ("humidity", 45.0, 0.3),
        ("power", 3.5, 0.03),
    ),
}
_TYPE_ORDER = tuple(DEVICE_TYPES)
# A stable index per metric name for RNG keys (independent of its position in a device type).
_METRIC_INDEX = {
    name: i
    for i, name in enumerate(
        sorted({m for metrics in DEVICE_TYPES.values() for m, _l, _s in metrics})
    )
}


@dataclass(frozen=True)
class MetricParams:
    name: str
    index: int  # stable RNG key of the metric name
    base: float
    sigma: float  # noise standard deviation: the unit of every anomaly magnitude
    daily_amp: float
    daily_phase: float
    short_amp: float
    short_period_s: int
    short_phase: float
    slow_amp: float
    slow_period_s: int
    slow_phase: float


@dataclass(frozen=True)
class Device:
    device_id: str
    device_type: str
    index: int  # position in the fleet: the device's RNG key
    metrics: tuple[MetricParams, ...]


def build_fleet(seed: int, n_devices: int) -> list[Device]:
    """``n_devices`` devices, types in rotation (pump, compressor, hvac), ids like ``pump-001``.

    Each device's parameters come from an RNG keyed by (seed, device index) only, so a larger
    fleet keeps the first devices unchanged and the same seed always gives the same fleet."""
    if n_devices < 1:
        raise ConfigError(f"the fleet needs at least one device, got {n_devices}")
    fleet = []
    for i in range(n_devices):
        dtype = _TYPE_ORDER[i % len(_TYPE_ORDER)]
        rng = np.random.default_rng([seed, 0, i])
        load_phase = rng.uniform(0, 2 * np.pi)  # one daily load pattern per device
        metrics = []
        for name, level, sigma in DEVICE_TYPES[dtype]:
            s = float(sigma * rng.uniform(0.8, 1.25))
            metrics.append(
                MetricParams(
                    name=name,
                    index=_METRIC_INDEX[name],
                    base=float(level * rng.uniform(0.9, 1.1)),
                    sigma=s,
                    daily_amp=float(s * rng.uniform(5, 12)),
                    daily_phase=float(load_phase + rng.uniform(-0.5, 0.5)),
                    short_amp=float(s * rng.uniform(1.5, 4)),
                    short_period_s=int(rng.integers(40, 91)) * 60,
                    short_phase=float(rng.uniform(0, 2 * np.pi)),
                    slow_amp=float(s * rng.uniform(3, 8)),
                    slow_period_s=int(rng.integers(3 * DAY_S, 10 * DAY_S)),
                    slow_phase=float(rng.uniform(0, 2 * np.pi)),
                )
            )
        number = i // len(_TYPE_ORDER) + 1
        fleet.append(Device(f"{dtype}-{number:03d}", dtype, i, tuple(metrics)))
    return fleet
