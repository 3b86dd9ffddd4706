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
PERSISTENT_KINDS = frozenset({"level_shift", "drift", "variance_change"})
IRREGULARITIES = ("jitter", "dropped", "gaps", "repeats", "clock_jumps")
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
DAY_S, WEEK_S = 86_400, 7 * 86_400
# No anomaly starts before this share of a series: the 15 % probation plus a margin.
FIRST_ONSET = 0.20
LAST_END = 0.97
WINDOW_SHARE = 0.10  # NAB: windows cover 10 % of the rows, split among the anomalies
PRE_SHARE = 0.10  # share of W before the onset
BASE_TIME = np.datetime64("2025-01-06T00:00:00", "ms")
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


def _clean(
    rng: np.random.Generator, t: np.ndarray, interval_s: int, feats: list[str]
) -> np.ndarray:
    """Trend plus one to three seasonalities, in noise-sigma units."""
    span = max(float(t[-1] - t[0]), interval_s)
    x = np.zeros(len(t))
    if rng.random() < 0.6:
        total = float(rng.uniform(-8.0, 8.0))
        x += total * (t - t[0]) / span
        feats.append(f"trend({total:+.1f} sigma)")
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
        elif kind == "noise_burst":
            dur = max(int(rng.uniform(0.1, 0.4) * w), 5)
        else:  # level_shift, variance_change: the onset itself
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
        body = "\n".join(
            f"{t},{v!r}"
            for t, v in zip(
                df["timestamp"].tolist(), df["value"].astype(float).tolist(), strict=True
            )
        )
        path.write_text("timestamp,value\n" + body + "\n", encoding="utf-8")
    info = CorpusInfo(data_dir, out_dir / "labels.json", seed, series, source)
    info.labels_path.write_text(json.dumps(info.labels(), indent=1) + "\n", encoding="utf-8")
    manifest = {"params": params, "window_rule": __doc__, **info.to_dict()}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", "utf-8")
    return info


def generate_corpus(
    out_dir: Path,
    n_series: int,
    total_rows: int,
    seed: int,
    min_rows: int = 1000,
    max_rows: int = 25000,
) -> CorpusInfo:
    """Write ``n_series`` labelled series totalling exactly ``total_rows`` rows (each between
    ``min_rows`` and ``max_rows``) under ``out_dir``; the same arguments give the same bytes.

    Coverage is guaranteed for small corpora: series ``i`` always has irregularity
    ``IRREGULARITIES[i % 6]`` (none for ``i % 6 == 5``) plus random others, and anomaly kinds
    are dealt from shuffled decks of all seven kinds."""
    rng = np.random.default_rng([seed, 7001])
    counts = _row_counts(rng, n_series, total_rows, min_rows, max_rows)
    freq_list = list(FREQS)
    deck: list[str] = []
    frames: list[tuple[str, pd.DataFrame]] = []
    series: list[SeriesInfo] = []
    for i, n in enumerate(counts.tolist()):
        srng = np.random.default_rng([seed, 7002, i])  # per series: stable under edits above
        interval = freq_list[int(srng.integers(len(freq_list)))]
        n_anom = int(srng.choice([0, 1, 2, 3, 4], p=[0.05, 0.3, 0.35, 0.2, 0.1]))
        n_anom = min(n_anom, max(1, n // 400))  # short series: room for each window
        kinds = []
        for _ in range(n_anom):
            if not deck:
                deck = [str(k) for k in rng.permutation(KINDS)]
            kinds.append(deck.pop())
        forced = IRREGULARITIES[i % 6] if i % 6 < len(IRREGULARITIES) else None
        df, windows, feats = _make_series(srng, n, interval, forced, kinds)
        folder = FREQS[interval]
        rel = (
            f"{folder}/site_{i % 4}/series_{i:03d}.csv"
            if i % 3 == 2
            else f"{folder}/series_{i:03d}.csv"
        )
        frames.append((rel, df))
        series.append(SeriesInfo(rel, n, interval, windows, feats))
    params = {
        "n_series": n_series,
        "total_rows": total_rows,
        "seed": seed,
        "min_rows": min_rows,
        "max_rows": max_rows,
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
