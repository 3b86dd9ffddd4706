"""The hard profile: non-sinusoidal seasons at the sampling interval, bursty counters,
seasonal anomalies, sensor outages and clock jumps."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from iot_mlops.evaluation.corpus.frame import (
    _frame,
    _report_times,
    _to_units,
)
from iot_mlops.evaluation.corpus.signal import (
    _Anomaly,
    _inject,
    _noise,
    _place,
    _timeline,
    _trend,
)
from iot_mlops.evaluation.corpus.spec import (
    DAY_S,
    HARD_IRREGULARITIES,
    WEEK_S,
    LabelWindow,
)

# --------------------------------------------------------------------------------------------
# The hard profile: seasons at the sampling interval, bursty counters, seasonal anomalies
# --------------------------------------------------------------------------------------------


def _cycle_shape(rng: np.random.Generator, phase: np.ndarray) -> tuple[np.ndarray, str]:
    """A non-sinusoidal cycle in [0, 1] at ``phase`` (hours of a 24-hour cycle, [0, 24)), and
    its name for the manifest."""
    grid = np.linspace(0.0, 24.0, 1441)  # normalise on a fixed grid: independent of sampling

    if rng.random() < 0.5:
        # Traffic / server load: a night floor, a morning ramp to a daytime plateau, an
        # evening peak, then the late-evening decline.
        ramp_at, peak_at = float(rng.uniform(6.0, 9.0)), float(rng.uniform(17.5, 21.0))
        plateau, width = float(rng.uniform(0.45, 0.75)), float(rng.uniform(1.0, 2.5))

        def shape(h: np.ndarray) -> np.ndarray:
            ramp = 1.0 / (1.0 + np.exp(-2.5 * (h - ramp_at)))
            down = 1.0 / (1.0 + np.exp(-2.0 * (h - peak_at - 2.5)))
            d = (h - peak_at + 12.0) % 24.0 - 12.0  # distance to the peak, across midnight
            return plateau * ramp * (1.0 - down) + (1.0 - plateau) * np.exp(-0.5 * (d / width) ** 2)

        name = "traffic"
    else:
        clip = float(rng.uniform(0.2, 0.7))  # the top of the sinusoid is cut off: a plateau

        def shape(h: np.ndarray) -> np.ndarray:
            return np.minimum(np.sin(2 * np.pi * h / 24.0), clip)

        name = f"clipped({clip:.2f})"
    ref = shape(grid)
    return (shape(phase) - ref.min()) / (ref.max() - ref.min()), name


def _season_shape(
    rng: np.random.Generator,
    t: np.ndarray,
    interval_s: int,
    offset_days: int,
    feats: list[str],
    short_ok: bool,
) -> np.ndarray | None:
    """The main seasonal shape in [0, 1]: daily (and weekly) if the span allows, else (if
    ``short_ok``) hourly, else a cycle of 8-300 intervals; None if none fits."""
    span = max(float(t[-1] - t[0]), interval_s)
    if span >= 2 * DAY_S:
        period = DAY_S
    elif short_ok and 8 * interval_s <= 3600 <= span / 2:
        period = 3600
    elif short_ok:
        k_max = min(300, int(span / 2 / interval_s))
        if k_max < 8:
            return None
        period = int(rng.integers(8, k_max + 1)) * interval_s
    else:
        return None
    shift = float(rng.uniform(0.0, DAY_S))  # the site's local time (a timezone, in seconds)
    local = t + shift
    y, name = _cycle_shape(rng, (local % period) * (24.0 / period))
    feats.append(f"season({period}s,{name})")
    if period == DAY_S and span >= 3 * WEEK_S:
        # Weekends (local Saturday and Sunday) run at a fraction of the weekday profile.
        k = float(rng.uniform(0.3, 0.7))
        weekday = (offset_days + np.floor(local / DAY_S).astype(np.int64)) % 7
        y = np.where(weekday >= 5, k * y, y)
        feats.append(f"weekly(weekend x{k:.2f})")
    return y


def _hard_clean(
    rng: np.random.Generator, t: np.ndarray, interval_s: int, offset_days: int, feats: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Sometimes a trend, always a main season (2-8 sigma); returns (clean, season part)."""
    span = max(float(t[-1] - t[0]), interval_s)
    x = _trend(rng, t, span, 0.4, feats)
    shape = _season_shape(rng, t, interval_s, offset_days, feats, short_ok=True)
    if shape is None:  # a series too short for any cycle (only with tiny min_rows)
        return x, np.zeros(len(t))
    amp = float(rng.uniform(2.0, 8.0))
    feats.append(f"amplitude({amp:.1f} sigma)")
    season = 2.0 * amp * (shape - shape.mean())  # weekday peak-to-peak = 2 amp
    return x + season, season


def _inject_hard(
    rng: np.random.Generator, x: np.ndarray, noise: np.ndarray, season: np.ndarray, an: _Anomaly
) -> None:
    """The two seasonal kinds; every other kind as in the standard profile."""
    o = an.onset
    if an.kind == "amplitude_change":
        f = rng.uniform(2.5, 4.0) if rng.random() < 0.5 else rng.uniform(0.1, 0.3)
        x[o:] += (f - 1.0) * season[o:]
    elif an.kind == "season_level_shift":
        # Inside the daily range, so no single value is out of the ordinary: only the level
        # relative to the time of day is.
        sign = 1.0 if rng.random() < 0.5 else -1.0
        x[o:] += sign * rng.uniform(0.4, 0.8) * float(np.ptp(season[:o]))
    else:
        _inject(rng, x, noise, an)


def _bursts(rng: np.random.Generator, n: int, feats: list[str]) -> np.ndarray:
    """Rate multipliers of an on/off (Markov) burst process with heavy-tailed sizes."""
    duty = float(rng.uniform(0.03, 0.10))
    mean_on = float(rng.uniform(3.0, 20.0))
    p_start = 1.0 / (mean_on * (1.0 / duty - 1.0))  # geometric quiet stretches: memoryless
    m = np.ones(n)
    pos = int(rng.geometric(p_start))
    while pos < n:
        length = int(rng.geometric(1.0 / mean_on))
        size = min(float(rng.uniform(4.0, 8.0) * (1.0 + rng.pareto(1.3))), 100.0)
        j = np.arange(min(length, n - pos))
        m[pos : pos + len(j)] = 1.0 + (size - 1.0) * np.exp(-2.0 * j / length)  # then decays
        pos += length + int(rng.geometric(p_start))
    feats.append(f"bursts(duty={duty:.2f},len={mean_on:.0f})")
    return m


def _counter(
    rng: np.random.Generator,
    t: np.ndarray,
    interval_s: int,
    offset_days: int,
    anomalies: list[_Anomaly],
    feats: list[str],
) -> np.ndarray:
    """A non-negative integer counter: Poisson counts of a (seasonal) base rate times bursts."""
    n = len(t)
    base = float(np.exp(rng.uniform(math.log(2.0), math.log(30.0))))
    feats.append(f"counter(base={base:.1f})")
    rate = np.full(n, base)
    shape = _season_shape(rng, t, interval_s, offset_days, feats, short_ok=False)
    if shape is not None:
        depth = float(rng.uniform(0.3, 0.8))
        rate *= 1.0 - depth + depth * shape
    lam = rate * _bursts(rng, n, feats)
    for an in anomalies:
        if an.kind == "rate_change":
            f = rng.uniform(2.5, 5.0) if rng.random() < 0.5 else rng.uniform(0.1, 0.3)
            lam[an.onset :] *= f
    # Several times the largest normal burst in counts (not in multiples of the base rate: a
    # burst after a drop of the rate or at night must still dwarf every normal one).
    peak = float(lam.max())
    for an in anomalies:
        if an.kind == "burst":
            o, end = an.onset, an.last + 1
            size = float(rng.uniform(3.0, 6.0)) * peak
            lam[o:end] = size * np.exp(-0.5 * np.arange(end - o) / (end - o))  # held, fading
    counts = rng.poisson(lam).astype(np.int64)
    for an in anomalies:
        if an.kind == "stuck":  # a counter stuck at 0 or at its last value
            counts[an.onset : an.last + 1] = 0 if rng.random() < 0.5 else counts[an.onset - 1]
    return counts


def _missing_stretch(
    rng: np.random.Generator, t: np.ndarray, interval_s: int, anomalies: list[_Anomaly]
) -> np.ndarray | None:
    """A sensor outage: 2-10 % of the rows' worth of time missing, between two rows outside
    every window (with a margin); None if no such place."""
    n = len(t)
    busy = np.zeros(n, dtype=bool)
    busy[: n // 10] = True  # the probation keeps its data
    for an in anomalies:
        margin = (an.b - an.a) // 4 + 1  # no anomaly starts or ends right at an outage
        busy[max(an.a - margin, 0) : an.b + margin + 1] = True
    free = np.flatnonzero(~busy)
    if not len(free):
        return None
    r = int(rng.choice(free))  # the first row after the outage
    out = t.copy()
    out[r:] += int(n * rng.uniform(0.02, 0.10)) * interval_s
    return out


def _make_hard_series(
    rng: np.random.Generator,
    n: int,
    interval_s: int,
    forced: str | None,
    kinds: list[str],
    counter: bool,
) -> tuple[pd.DataFrame, list[LabelWindow], list[str]]:
    """One series of the hard profile: a seasonal measurement or a bursty counter."""
    feats = {f for f in HARD_IRREGULARITIES if rng.random() < 0.3}
    if forced:
        feats.add(forced)
    offset_days = int(rng.integers(0, 300))  # drawn first: weekends follow the calendar
    t = _timeline(rng, n, interval_s, feats)
    anomalies = _place(rng, n, kinds)
    if "missing_stretch" in feats:
        # After the placement: the outage must fall between windows, not inside one.
        shifted = _missing_stretch(rng, t, interval_s, anomalies)
        if shifted is None:
            feats.discard("missing_stretch")
        else:
            t = shifted
    info = sorted(feats - {"clock_jumps"})
    if counter:
        values = _counter(rng, t, interval_s, offset_days, anomalies, info)
    else:
        noise = _noise(rng, n, info)
        x, season = _hard_clean(rng, t, interval_s, offset_days, info)
        x += noise
        for an in anomalies:
            _inject_hard(rng, x, noise, season, an)
        values = _to_units(rng, x)
    reported = _report_times(rng, t, interval_s, feats, anomalies, info)
    return _frame(rng, t, reported, values, anomalies, feats, info, interval_s, offset_days)
