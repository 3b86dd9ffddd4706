"""Labelled evaluation corpora in the ``evaluate`` format, deterministic for a seed.

Layout written under ``out_dir``::

    data/<freq>/[site_<k>/]series_<i>.csv   one series per file: ``timestamp,value``
    labels.json                              {relpath: [{"start", "end", "kind"}, ...]}
    manifest.json                            how it was made, per series (for docs/repro)

``generate_corpus`` makes series "harder than the simulator": sampling intervals from 1 s to
1 h, jittered timestamps, dropped points, gaps, repeated timestamps, local clock jumps (a block
of rows whose clock runs behind), trends, one to three seasonalities, gaussian or student-t
innovations, optionally AR(1)-correlated, and seven anomaly kinds. ``level_shift``,
``drift`` (a ramp, then the new level holds) and ``variance_change`` persist: they are regime
changes, labelled ONCE at their onset; after the window the new regime is normal.

Label windows (our choice, documented in the manifest): NAB sizes a window as 10 % of the
series' rows divided by its number of anomalies and centres it on the anomaly. We keep the
size ``W`` but start the window ``ceil(0.1 W)`` rows before the onset and end it ``W`` rows
after the window start, or ``ceil(0.1 W)`` rows after the anomaly's last row if that is later.
Why: our onsets are exact, and a causal detector cannot fire before the onset, so a centred
window would cap even an ideal causal detector near 86 instead of about 99; extending to the
anomaly's end keeps flags on a long anomaly (and just after it) from counting as false
positives. Anomalies start after the first 20 % of the rows, so none falls in the 15 %
probation that the model trains on. Clock jumps are kept away from windows (including how far
back they reach), so every window is a clean contiguous block of rows.

``profile="hard"`` (the default ``"standard"`` is the above, byte for byte) makes series harder
in the ways real fleets are. Intervals are weighted toward 1 min to 1 h, where daily and weekly
seasons matter (a few still at 1 s to 30 s). Every measured series has one main season of
2-8 sigma amplitude that is not a sinusoid (a traffic/load day: night floor, morning ramp,
daytime plateau, evening peak; or a clipped sinusoid) at a random local time: daily if the span
covers two days, plus a weekly shape (local Saturday and Sunday at 0.3-0.7 of the weekday
profile) if it covers three weeks; shorter series get the hourly or a shorter cycle. Some also
have a trend. Series ``i`` with ``i % 4 == 1`` are counters: non-negative integer Poisson
counts of a base rate (seasonal when the span allows a day) times an on/off burst process
with heavy-tailed burst sizes; bursts are normal behaviour and unlabelled. Measured series
draw from the seven kinds plus ``amplitude_change`` (the seasonal part times 2.5-4 or
0.1-0.3 from the onset on) and ``season_level_shift`` (a shift of 0.4-0.8 of the season's
peak-to-peak: inside the daily range); counters from ``rate_change`` (the rate times 2.5-5
or 0.1-0.3 from the onset on), ``stuck`` (at 0 or at the last count) and ``burst`` (3-6 times
the largest normal burst's rate, held). All three new persistent kinds are labelled once at
their onset. A new irregularity, ``missing_stretch``, is a sensor outage: the time of 2-10 %
of the rows missing between two rows outside every window (with a margin).

``simulator_corpus`` writes the project simulator's output in the same format.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from iot_mlops.errors import ConfigError

KINDS = ("spike", "dip", "level_shift", "drift", "stuck", "noise_burst", "variance_change")
# The hard profile: measured series also get two seasonal kinds; counters have their own three.
HARD_KINDS = (*KINDS, "amplitude_change", "season_level_shift")
COUNTER_KINDS = ("rate_change", "stuck", "burst")
ALL_KINDS = (*HARD_KINDS, "rate_change", "burst")
PERSISTENT_KINDS = frozenset(
    {
        "level_shift",
        "drift",
        "variance_change",
        "amplitude_change",
        "season_level_shift",
        "rate_change",
    }
)
IRREGULARITIES = ("jitter", "dropped", "gaps", "repeats", "clock_jumps")
HARD_IRREGULARITIES = (*IRREGULARITIES, "missing_stretch")
PROFILES = ("standard", "hard")
# Sampling intervals (seconds) and their folder names.
FREQS: dict[int, str] = {
    1: "1s",
    5: "5s",
    10: "10s",
    30: "30s",
    60: "1min",
    300: "5min",
    900: "15min",
    3600: "1h",
}
# The hard profile favours the intervals at which daily and weekly seasons matter.
HARD_FREQ_WEIGHTS = (0.03, 0.03, 0.04, 0.05, 0.2, 0.25, 0.2, 0.2)
COUNTER_EVERY = 4  # hard profile: series i with i % 4 == 1 is a counter (about a quarter)
DAY_S, WEEK_S = 86_400, 7 * 86_400
# No anomaly starts before this share of a series: the 15 % probation plus a margin.
FIRST_ONSET = 0.20
LAST_END = 0.97
WINDOW_SHARE = 0.10  # NAB: windows cover 10 % of the rows, split among the anomalies
PRE_SHARE = 0.10  # share of W before the onset
BASE_TIME = np.datetime64("2025-01-06T00:00:00", "ms")  # a Monday: weekday = days % 7
SIM_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class LabelWindow:
    start: str  # ISO 8601 UTC, ms
    end: str
    kind: str


@dataclass
class SeriesInfo:
    relpath: str  # relative to data_dir, posix
    rows: int
    interval_s: int
    windows: list[LabelWindow]
    features: list[str] = field(default_factory=list)  # irregularities and noise model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CorpusInfo:
    data_dir: Path
    labels_path: Path
    seed: int
    series: list[SeriesInfo]
    source: str  # "generated" or "simulator"

    @property
    def total_rows(self) -> int:
        return sum(s.rows for s in self.series)

    @property
    def kinds(self) -> Counter[str]:
        return Counter(w.kind for s in self.series for w in s.windows)

    @property
    def n_windows(self) -> int:
        return sum(len(s.windows) for s in self.series)

    def labels(self) -> dict[str, list[dict[str, str]]]:
        return {s.relpath: [asdict(w) for w in s.windows] for s in self.series}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "seed": self.seed,
            "data_dir": str(self.data_dir),
            "labels": str(self.labels_path),
            "series": len(self.series),
            "total_rows": self.total_rows,
            "windows": self.n_windows,
            "kinds": dict(sorted(self.kinds.items())),
            "files": [s.to_dict() for s in self.series],
        }


# --------------------------------------------------------------------------------------------
# Row budget
# --------------------------------------------------------------------------------------------


def _row_counts(rng: np.random.Generator, n: int, total: int, lo: int, hi: int) -> np.ndarray:
    """``n`` integers in [lo, hi] summing to ``total``, spread unevenly (log-normal weights)."""
    if n < 1:
        raise ConfigError(f"a corpus needs at least one series, got {n}")
    if lo < 1 or hi < lo:
        raise ConfigError(f"series length bounds must satisfy 1 <= min <= max, got {lo}, {hi}")
    if not n * lo <= total <= n * hi:
        raise ConfigError(
            f"{n} series of {lo} to {hi} rows cannot total {total} rows "
            f"(possible: {n * lo} to {n * hi})"
        )
    cap = float(hi - lo)
    w = rng.lognormal(0.0, 1.0, n)
    alloc = np.zeros(n)
    free = np.ones(n, dtype=bool)
    remaining = float(total - n * lo)
    # Water-filling: share out in proportion to the weights; whoever hits the cap is fixed.
    while remaining > 1e-9 and free.any():
        share = np.zeros(n)
        share[free] = remaining * w[free] / w[free].sum()
        over = free & (alloc + share >= cap)
        if not over.any():
            alloc += share
            break
        remaining -= float((cap - alloc[over]).sum())
        alloc[over] = cap
        free &= ~over
    counts = np.floor(alloc).astype(np.int64)
    short = int(total - n * lo - counts.sum())
    # Hand out the rounding remainder by largest fractional part, never past the cap.
    for i in np.argsort(-(alloc - counts), kind="stable"):
        if short <= 0:
            break
        if counts[i] < cap:
            counts[i] += 1
            short -= 1
    return counts + lo


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


def _clock_jumps(
    rng: np.random.Generator, t: np.ndarray, interval_s: int, windows: list[_Anomaly]
) -> tuple[np.ndarray, int]:
    """Shift a few blocks of rows backwards in time, away from every window."""
    n = len(t)
    rep = t.copy()
    busy = np.zeros(n + 1, dtype=bool)
    for an in windows:
        busy[an.a : an.b + 1] = True
    done = 0
    want = int(rng.integers(1, 4))
    for _ in range(50):
        if done == want:
            break
        length = int(rng.integers(5, 51))
        back_rows = int(rng.integers(2, 21))
        p = int(rng.integers(n // 10, max(n // 10 + 1, n - length - 1)))
        # Keep clear of windows down to the earliest time the shifted block reaches back to
        # (in rows that depends on drops, gaps and repeats, so search the true times).
        reach = t[p] - (back_rows + 1) * interval_s
        lo = max(int(np.searchsorted(t, reach, side="left")) - 5, 0)
        hi = min(p + length + 5, n)
        if busy[lo:hi].any():
            continue
        rep[p : p + length] -= back_rows * interval_s
        busy[lo:hi] = True
        done += 1
    return rep, done


def _iso(t: np.ndarray) -> np.ndarray:
    return np.char.add(np.datetime_as_string(t, unit="ms"), "Z")


def _report_times(
    rng: np.random.Generator,
    t: np.ndarray,
    interval_s: int,
    feats: set[str],
    anomalies: list[_Anomaly],
    info: list[str],
) -> np.ndarray:
    """The timestamps the sensor reports: the true times, or with clock jumps if asked."""
    if "clock_jumps" not in feats:
        return t
    reported, jumps = _clock_jumps(rng, t, interval_s, anomalies)
    if jumps:
        info.append("clock_jumps")
    return reported


def _to_units(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Physical units: a level and a scale per series; a sensor resolution of ~sigma/20."""
    scale = 10 ** rng.uniform(-1.5, 2.0)
    level = rng.uniform(-2.0, 10.0) * scale * 10
    decimals = max(0, -math.floor(math.log10(scale / 20)))
    return np.round(level + scale * x, decimals)


def _frame(
    rng: np.random.Generator,
    t: np.ndarray,
    reported: np.ndarray,
    values: np.ndarray,
    anomalies: list[_Anomaly],
    feats: set[str],
    info: list[str],
    interval_s: int,
    offset_days: int | None = None,
) -> tuple[pd.DataFrame, list[LabelWindow], list[str]]:
    """The series' file content and its label windows (at the true times of their rows)."""
    if offset_days is None:  # the standard profile draws it here: keep its draw order
        offset_days = int(rng.integers(0, 300))
    t0 = BASE_TIME + np.timedelta64(offset_days * DAY_S * 1000, "ms")
    ts = t0 + np.round(reported * 1000).astype(np.int64).astype("timedelta64[ms]")
    true_ts = t0 + np.round(t * 1000).astype(np.int64).astype("timedelta64[ms]")
    if interval_s >= 60 and "jitter" not in feats and rng.random() < 0.5:
        # NAB's own format (tz-naive = UTC), to exercise both in the reader.
        text = np.char.replace(np.datetime_as_string(ts, unit="s"), "T", " ")
        info.append("naive_timestamps")
    else:
        text = _iso(ts)
    windows = [
        LabelWindow(
            str(_iso(true_ts[an.a : an.a + 1])[0]), str(_iso(true_ts[an.b : an.b + 1])[0]), an.kind
        )
        for an in anomalies
    ]
    return pd.DataFrame({"timestamp": text, "value": values}), windows, info


def _make_series(
    rng: np.random.Generator, n: int, interval_s: int, forced: str | None, kinds: list[str]
) -> tuple[pd.DataFrame, list[LabelWindow], list[str]]:
    """One series of the standard profile."""
    feats = {f for f in IRREGULARITIES if rng.random() < 0.3}
    if forced:
        feats.add(forced)
    t = _timeline(rng, n, interval_s, feats)
    info = sorted(feats - {"clock_jumps"})
    noise = _noise(rng, n, info)
    x = _clean(rng, t, interval_s, info) + noise
    anomalies = _place(rng, n, kinds)
    for an in anomalies:
        _inject(rng, x, noise, an)
    reported = _report_times(rng, t, interval_s, feats, anomalies, info)
    values = _to_units(rng, x)
    return _frame(rng, t, reported, values, anomalies, feats, info, interval_s)


def _write(
    out_dir: Path,
    frames: list[tuple[str, pd.DataFrame]],
    series: list[SeriesInfo],
    seed: int,
    source: str,
    params: dict[str, Any],
) -> CorpusInfo:
    out_dir = Path(out_dir)
    data_dir = out_dir / "data"
    for rel, df in frames:
        path = data_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        # Hand-joined: 5x faster than DataFrame.to_csv; repr gives the shortest exact float.
        # Counters (integer columns) are written as integers, everything else as floats.
        col = df["value"]
        values = col.tolist() if col.dtype.kind in "iu" else col.astype(float).tolist()
        body = "\n".join(
            f"{t},{v!r}" for t, v in zip(df["timestamp"].tolist(), values, strict=True)
        )
        path.write_text("timestamp,value\n" + body + "\n", encoding="utf-8")
    info = CorpusInfo(data_dir, out_dir / "labels.json", seed, series, source)
    info.labels_path.write_text(json.dumps(info.labels(), indent=1) + "\n", encoding="utf-8")
    manifest = {"params": params, "window_rule": __doc__, **info.to_dict()}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", "utf-8")
    return info


def _deal(rng: np.random.Generator, decks: dict[str, list[str]], pool: tuple[str, ...]) -> str:
    """The next kind from ``pool``'s deck, reshuffled from the corpus rng when empty."""
    deck = decks.setdefault(",".join(pool), [])
    if not deck:
        deck.extend(str(k) for k in rng.permutation(pool))
    return deck.pop()


def _one_series(
    rng: np.random.Generator, decks: dict[str, list[str]], i: int, n: int, seed: int, hard: bool
) -> tuple[str, pd.DataFrame, SeriesInfo]:
    """Series ``i`` (``n`` rows): its path, its file content and its manifest entry."""
    srng = np.random.default_rng([seed, 7002, i])  # per series: stable under edits above
    freq_list = list(FREQS)
    if hard:
        interval = int(srng.choice(freq_list, p=HARD_FREQ_WEIGHTS))
    else:
        interval = freq_list[int(srng.integers(len(freq_list)))]
    n_anom = int(srng.choice([0, 1, 2, 3, 4], p=[0.05, 0.3, 0.35, 0.2, 0.1]))
    n_anom = min(n_anom, max(1, n // 400))  # short series: room for each window
    counter = hard and i % COUNTER_EVERY == 1
    pool = COUNTER_KINDS if counter else HARD_KINDS if hard else KINDS
    kinds = [_deal(rng, decks, pool) for _ in range(n_anom)]
    irregular = HARD_IRREGULARITIES if hard else IRREGULARITIES
    cycle = len(irregular) + 1  # the last slot of each cycle forces nothing
    forced = irregular[i % cycle] if i % cycle < len(irregular) else None
    if hard:
        df, windows, feats = _make_hard_series(srng, n, interval, forced, kinds, counter)
    else:
        df, windows, feats = _make_series(srng, n, interval, forced, kinds)
    folder = FREQS[interval]
    rel = (
        f"{folder}/site_{i % 4}/series_{i:03d}.csv"
        if i % 3 == 2
        else f"{folder}/series_{i:03d}.csv"
    )
    return rel, df, SeriesInfo(rel, n, interval, windows, feats)


def generate_corpus(
    out_dir: Path,
    n_series: int,
    total_rows: int,
    seed: int,
    min_rows: int = 1000,
    max_rows: int = 25000,
    profile: str = "standard",
) -> CorpusInfo:
    """Write ``n_series`` labelled series totalling exactly ``total_rows`` rows (each between
    ``min_rows`` and ``max_rows``) under ``out_dir``; the same arguments give the same bytes.

    ``profile`` is ``"standard"`` or ``"hard"`` (see the module docstring).

    Coverage is guaranteed for small corpora: series ``i`` always has irregularity
    ``IRREGULARITIES[i % 6]`` (none for ``i % 6 == 5``; hard: ``HARD_IRREGULARITIES[i % 7]``,
    none for ``i % 7 == 6``) plus random others, and anomaly kinds are dealt from shuffled
    decks of all the kinds (hard: one deck for measurements, one for counters)."""
    if profile not in PROFILES:
        raise ConfigError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    rng = np.random.default_rng([seed, 7001])
    counts = _row_counts(rng, n_series, total_rows, min_rows, max_rows)
    decks: dict[str, list[str]] = {}
    frames: list[tuple[str, pd.DataFrame]] = []
    series: list[SeriesInfo] = []
    for i, n in enumerate(counts.tolist()):
        rel, df, entry = _one_series(rng, decks, i, n, seed, profile == "hard")
        frames.append((rel, df))
        series.append(entry)
    params = {
        "n_series": n_series,
        "total_rows": total_rows,
        "seed": seed,
        "min_rows": min_rows,
        "max_rows": max_rows,
        "profile": profile,
    }
    return _write(out_dir, frames, series, seed, "generated", params)


# --------------------------------------------------------------------------------------------
# The simulator's fleet in the same format
# --------------------------------------------------------------------------------------------


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as inclusive (first, last) row indices."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


def simulator_corpus(
    out_dir: Path,
    n_devices: int = 6,
    n_steps: int = 10_000,
    interval_s: int = 60,
    seed: int = 42,
    start_ms: int = SIM_START_MS,
    pad_after: int = 0,
) -> CorpusInfo:
    """The simulator's fleet (``build_fleet(seed, n_devices)``, ``n_steps`` readings per series
    from ``start_ms``) as one CSV per series at ``<device_id>/<metric_name>.csv``.

    Windows are the maximal runs of ``is_anomaly`` rows (kind: the run's ``anomaly_kind``),
    optionally extended by ``pad_after`` rows (runs that then touch are merged)."""
    from iot_mlops.data.simulate import build_fleet, generate

    if pad_after < 0:
        raise ConfigError(f"pad_after must be >= 0, got {pad_after}")
    fleet = build_fleet(seed, n_devices)
    df = generate(fleet, start_ms, n_steps, interval_s, seed)
    frames: list[tuple[str, pd.DataFrame]] = []
    series: list[SeriesInfo] = []
    for (dev, metric), g in df.groupby(["device_id", "metric_name"], sort=True):
        ts = g["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ms]")
        mask = g["is_anomaly"].to_numpy(dtype=bool)
        kinds = g["anomaly_kind"].to_numpy(dtype=object)
        runs = _runs(mask)
        if pad_after:
            merged: list[list[int]] = []
            for a, b in runs:
                b = min(b + pad_after, len(mask) - 1)
                if merged and a <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], b)
                else:
                    merged.append([a, b])
            runs = [(a, b) for a, b in merged]
        windows = []
        for a, b in runs:
            ks = [k for k in kinds[a : b + 1] if k]
            kind = Counter(ks).most_common(1)[0][0] if ks else "unknown"
            windows.append(
                LabelWindow(str(_iso(ts[a : a + 1])[0]), str(_iso(ts[b : b + 1])[0]), kind)
            )
        rel = f"{dev}/{metric}.csv"
        frames.append(
            (rel, pd.DataFrame({"timestamp": _iso(ts), "value": g["metric_value"].to_numpy()}))
        )
        series.append(SeriesInfo(rel, len(g), interval_s, windows, ["simulator"]))
    params = {
        "n_devices": n_devices,
        "n_steps": n_steps,
        "interval_s": interval_s,
        "seed": seed,
        "start_ms": start_ms,
        "pad_after": pad_after,
    }
    return _write(out_dir, frames, series, seed, "simulator", params)
