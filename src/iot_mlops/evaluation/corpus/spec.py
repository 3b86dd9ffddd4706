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

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
