"""One standard-profile series: its timeline with irregularities, noise, trend and seasons, and
the anomalies placed in it and injected."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from iot_mlops.evaluation.corpus.spec import (
    DAY_S,
    FIRST_ONSET,
    LAST_END,
    PRE_SHARE,
    WEEK_S,
    WINDOW_SHARE,
)

# --------------------------------------------------------------------------------------------
# One series
# --------------------------------------------------------------------------------------------


@dataclass
class _Anomaly:
    kind: str
    onset: int  # row index
    last: int  # last row the anomaly itself touches (persistent: the end of its onset phase)
    a: int = 0  # window rows [a, b]
    b: int = 0


def _timeline(rng: np.random.Generator, n: int, interval_s: int, feats: set[str]) -> np.ndarray:
    """True sampling times (float seconds from the series start) of ``n`` rows."""
    n_rep = int(rng.integers(max(1, n // 500), max(2, n // 100) + 1)) if "repeats" in feats else 0
    n_drop = int(n * rng.uniform(0.02, 0.10)) if "dropped" in feats else 0
    gaps: list[int] = []
    if "gaps" in feats:
        gaps = [int(n * rng.uniform(0.005, 0.03)) + 2 for _ in range(int(rng.integers(1, 4)))]
    n_grid = n - n_rep
    grid = n_grid + n_drop + sum(gaps)
    keep = np.ones(grid, dtype=bool)
    for g in gaps:
        # Gaps start after the first tenth so the probation has data.
        s = int(rng.integers(grid // 10, grid - g))
        keep[s : s + g] = False
    if n_drop:
        cand = np.flatnonzero(keep)
        keep[rng.choice(cand[1:], size=n_drop, replace=False)] = False
    k = np.flatnonzero(keep)
    extra = len(k) - n_grid  # gap blocks may overlap each other: trim to the exact count
    if extra > 0:
        k = k[:n_grid]
    t = k.astype(np.float64) * interval_s
    if "jitter" in feats:
        # Below half an interval: sampling is irregular but never out of order.
        t += rng.uniform(-0.4, 0.4, len(t)) * interval_s * rng.uniform(0.2, 1.0)
        t = np.maximum(t, 0.0)
    if n_rep:
        src = rng.choice(np.arange(1, n_grid), size=n_rep, replace=False)
        # Each chosen row is followed by a second reading with the same timestamp.
        times = np.ones(n_grid, dtype=np.int64)
        times[src] = 2
        t = np.repeat(t, times)
    return t


def _noise(rng: np.random.Generator, n: int, feats: list[str]) -> np.ndarray:
    """Unit-variance noise: gaussian or student-t innovations, optionally AR(1)."""
    if rng.random() < 0.5:
        df = float(rng.uniform(2.5, 6.0))
        e = rng.standard_t(df, n) * math.sqrt((df - 2.0) / df)
        feats.append(f"student_t(df={df:.1f})")
    else:
        e = rng.standard_normal(n)
        feats.append("gaussian")
    if rng.random() < 0.6:
        phi = float(rng.uniform(0.3, 0.95))
        e = lfilter([math.sqrt(1 - phi * phi)], [1.0, -phi], e)
        feats.append(f"ar1(phi={phi:.2f})")
    return e


def _trend(
    rng: np.random.Generator, t: np.ndarray, span: float, share: float, feats: list[str]
) -> np.ndarray:
    """A linear trend of up to 8 sigma over the series, in ``share`` of the series."""
    x = np.zeros(len(t))
    if rng.random() < share:
        total = float(rng.uniform(-8.0, 8.0))
        x += total * (t - t[0]) / span
        feats.append(f"trend({total:+.1f} sigma)")
    return x


def _clean(
    rng: np.random.Generator, t: np.ndarray, interval_s: int, feats: list[str]
) -> np.ndarray:
    """Trend plus one to three seasonalities, in noise-sigma units."""
    span = max(float(t[-1] - t[0]), interval_s)
    x = _trend(rng, t, span, 0.6, feats)
    periods = [DAY_S, WEEK_S, 3600, int(rng.integers(12, 300)) * interval_s]
    ok = [p for p in periods if 8 * interval_s <= p <= span / 2]
    if ok:
        n_season = int(rng.integers(1, min(3, len(ok)) + 1))
        for p in rng.choice(ok, size=n_season, replace=False):
            amp = float(rng.uniform(1.0, 8.0))
            phase = float(rng.uniform(0, 2 * np.pi))
            x += amp * np.sin(2 * np.pi * t / int(p) + phase)
            if rng.random() < 0.4:  # a non-sinusoidal shape: add the second harmonic
                x += 0.4 * amp * np.sin(4 * np.pi * t / int(p) + 2 * phase)
            feats.append(f"season({int(p)}s)")
    return x


def _place(rng: np.random.Generator, n: int, kinds: list[str]) -> list[_Anomaly]:
    """One anomaly per equal slot of [20 %, 97 %] of the rows, windows NAB-sized."""
    k = len(kinds)
    if not k:
        return []
    w = max(int(WINDOW_SHARE * n / k), 8)
    pre = math.ceil(PRE_SHARE * w)
    lo, hi = int(FIRST_ONSET * n), int(LAST_END * n)
    slot = (hi - lo) // k
    out = []
    for j, kind in enumerate(kinds):
        if kind in ("spike", "dip"):
            dur = int(rng.integers(1, 4))
        elif kind == "drift":
            dur = max(int(rng.uniform(0.3, 0.8) * w), 3)
        elif kind == "stuck":
            dur = max(int(rng.uniform(0.2, 0.6) * w), 10)
        elif kind in ("noise_burst", "burst"):
            dur = max(int(rng.uniform(0.1, 0.4) * w), 5)
        else:  # level_shift, variance_change, the seasonal kinds, rate_change: the onset
            dur = 1
        span = max(w, pre + dur + pre)  # the window's length in rows
        s0 = lo + j * slot
        a = s0 + int(rng.integers(0, max(slot - span, 1)))
        onset = a + pre
        last = onset + dur - 1
        b = max(a + w - 1, last + pre)
        out.append(_Anomaly(kind, onset, last, a, b))
    return out


def _inject(rng: np.random.Generator, x: np.ndarray, noise: np.ndarray, an: _Anomaly) -> None:
    """Apply one anomaly in place (unit: noise sigma)."""
    o, end = an.onset, an.last + 1
    # Spikes must stand out of the series' own tails (student-t noise has big ones).
    tail = float(np.quantile(np.abs(noise), 0.999))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if an.kind == "spike":
        x[o:end] += tail * rng.uniform(1.3, 2.5)
    elif an.kind == "dip":
        x[o:end] -= tail * rng.uniform(1.3, 2.5)
    elif an.kind == "level_shift":
        x[o:] += sign * rng.uniform(4.0, 8.0)
    elif an.kind == "drift":
        mag = sign * rng.uniform(6.0, 12.0)
        x[o:end] += mag * np.arange(1, end - o + 1) / (end - o)
        x[end:] += mag
    elif an.kind == "stuck":
        x[o:end] = x[o - 1]
    elif an.kind == "noise_burst":
        x[o:end] += rng.standard_normal(end - o) * rng.uniform(4.0, 8.0)
    elif an.kind == "variance_change":
        x[o:] += noise[o:] * (rng.uniform(3.0, 6.0) - 1.0)
