"""Detection quality: score a detector's flags against labelled anomaly windows (pure, no I/O
except reading the labels file).

Three views of the same detections:

* **Window score** (Numenta Anomaly Benchmark style). We follow NAB v1.x as implemented in
  ``numenta/NAB: nab/sweeper.py`` (``scaledSigmoid``, ``Sweeper.calcSweepScore``) with the
  application profiles of NAB's ``config/profiles.json`` / the NAB paper (Lavin & Ahmad 2015):
  standard (A_TP=1, A_FP=0.11, A_FN=1), reward_low_FP_rate (A_FP=0.22), reward_low_FN_rate
  (A_FN=2).

  - ``sigma(y) = 2 / (1 + exp(5 y)) - 1`` for ``y < 3``, else ``-1``.
  - Each window counts once. A detection at rank ``k`` (0-based) among the window's ``w`` rows
    has relative position ``y = -(w - k) / w`` (``-1`` at the first row, near 0 at the last);
    the window earns ``A_TP * sigma(y) / sigma(-1)`` for its *earliest* detection (NAB divides
    by ``sigma(-1)`` so a detection on the window's first row is worth exactly ``A_TP``).
  - A missed window costs ``-A_FN``.
  - A detection outside every window costs ``A_FP * sigma(d / (w_prev - 1))`` where ``d`` is
    the distance in rows from the end of the closest preceding window and ``w_prev`` its
    length: just after a window it costs almost nothing, three window lengths later the full
    ``-A_FP``. With no preceding window it costs ``-A_FP``.
  - Normalised over a corpus: ``100 * (raw - raw_null) / (raw_perfect - raw_null)``, where the
    null detector never fires and the perfect one fires exactly once, on each window's first
    row; raw scores are summed over all files before normalising (as NAB does).

  NAB works on row indices of time-sorted data. Our series may repeat timestamps or jump
  backwards, so a row belongs to a window iff ``start <= timestamp <= end`` and positions are
  ranks among the window's rows in input (arrival) order - identical to NAB on sorted data.
* **Point-wise** precision/recall/F1: a row is positive iff it lies in a window.
* **Event-wise**: recall = share of windows with at least one flag; precision = share of flag
  events (maximal runs of consecutive flagged rows) that touch a window.

Probation: as in NAB, the first ``floor(probation * rows)`` rows of each file (the data the
model may train on) are not scored: their flags are ignored and windows with no row after the
probation are left out (they are reported as ``skipped_windows``). Windows that contain no row
at all (e.g. inside a gap) are skipped the same way.

Undefined ratios (no predictions, no positives) are 0.0, as scikit-learn's
``zero_division=0``; a normalised window score over files without any scorable window is
``None`` (JSON null).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from iot_mlops.errors import ConfigError


@dataclass(frozen=True)
class Profile:
    name: str
    a_tp: float
    a_fp: float
    a_fn: float


# NAB application profiles (NAB paper, table 1; numenta/NAB config/profiles.json).
PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", 1.0, 0.11, 1.0),
    "reward_low_fp": Profile("reward_low_fp", 1.0, 0.22, 1.0),
    "reward_low_fn": Profile("reward_low_fn", 1.0, 0.11, 2.0),
}
DEFAULT_PROBATION = 0.15


class Window(tuple):  # type: ignore[type-arg]
    """A ``(start, end)`` pair of UTC timestamps that also carries the anomaly ``kind``.

    A tuple subclass so that it *is* the ``(start, end)`` pair of the labels contract
    (unpacking, equality and JSON all behave as a pair); ``kind`` rides along as an attribute.
    """

    kind: str | None

    def __new__(cls, start: pd.Timestamp, end: pd.Timestamp, kind: str | None = None) -> Window:
        obj = super().__new__(cls, (start, end))
        obj.kind = kind
        return obj

    @property
    def start(self) -> pd.Timestamp:
        return self[0]

    @property
    def end(self) -> pd.Timestamp:
        return self[1]

    def __repr__(self) -> str:
        return f"Window({self[0]}, {self[1]}, kind={self.kind!r})"


WindowLike = Sequence[Any]  # (start, end) with strings, Timestamps or datetime64


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def _utc(value: Any) -> pd.Timestamp:
    """A timestamp as tz-aware UTC; tz-naive input is taken as UTC."""
    ts = pd.Timestamp(value)
    if ts is pd.NaT or pd.isna(ts):
        raise ValueError("not a timestamp")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def load_labels(path: Path) -> dict[str, list[Window]]:
    """Read LABELS.json: ``{relpath: [[start, end] | {"start", "end", "kind"}, ...]}``.

    Returns windows sorted by start (``Window`` is a ``(start, end)`` tuple of UTC
    ``pd.Timestamp`` with a ``kind`` attribute). Windows of one file must not overlap: NAB
    merges overlapping windows, but silently merging would also merge their kinds, so we ask
    the user to do it."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"labels file {path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read labels file {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"labels file {path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"labels file {path} must hold a JSON object mapping each CSV's relative path "
            f"to a list of [start, end] windows, got {type(raw).__name__}"
        )
    labels: dict[str, list[Window]] = {}
    for rel, entries in raw.items():
        key = Path(rel).as_posix()  # tolerate "a\\b.csv"-free but "./a/b.csv"-style keys
        if key in labels:
            raise ConfigError(f"labels file {path}: {rel!r} is listed twice")
        if not isinstance(entries, list):
            raise ConfigError(
                f"labels file {path}: the entry of {rel!r} must be a list of windows, "
                f"got {type(entries).__name__}"
            )
        windows = [_parse_window(path, rel, i, e) for i, e in enumerate(entries)]
        windows.sort(key=lambda w: (w[0], w[1]))
        for a, b in itertools.pairwise(windows):
            if b[0] <= a[1]:
                raise ConfigError(
                    f"labels file {path}: windows of {rel!r} overlap "
                    f"([{a[0]}, {a[1]}] and [{b[0]}, {b[1]}])",
                    fix="merge overlapping windows into one",
                )
        labels[key] = windows
    return labels


def _parse_window(path: Path, rel: str, i: int, entry: Any) -> Window:
    where = f"labels file {path}: {rel!r} window #{i}"
    kind: str | None = None
    if isinstance(entry, dict):
        missing = {"start", "end"} - entry.keys()
        if missing:
            raise ConfigError(f"{where} lacks {', '.join(sorted(missing))}: {entry!r}")
        start_raw, end_raw = entry["start"], entry["end"]
        if entry.get("kind") is not None:
            kind = str(entry["kind"])
    elif isinstance(entry, list | tuple) and len(entry) == 2:
        start_raw, end_raw = entry
    else:
        raise ConfigError(
            f'{where} must be [start, end] or {{"start": .., "end": .., "kind": ..}}, got {entry!r}'
        )
    try:
        # Strings only: a bare number would be ambiguous (seconds? milliseconds?).
        if not isinstance(start_raw, str) or not isinstance(end_raw, str):
            raise ValueError
        start, end = _utc(start_raw), _utc(end_raw)
    except (ValueError, TypeError, OverflowError):
        raise ConfigError(
            f"{where} has an unreadable timestamp: {entry!r}",
            fix='use ISO 8601, e.g. "2026-01-01 00:00:00" (tz-naive means UTC)',
        ) from None
    if start > end:
        raise ConfigError(f"{where} starts after it ends: {entry!r}")
    return Window(start, end, kind)


# --------------------------------------------------------------------------------------------
# Window (NAB) score
# --------------------------------------------------------------------------------------------


def scaled_sigmoid(y: np.ndarray | float) -> np.ndarray:
    """NAB's ``2 * sigmoid(-5 y) - 1``, clamped to -1 from ``y >= 3`` on."""
    y = np.asarray(y, dtype=np.float64)
    with np.errstate(over="ignore"):
        s = 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0
    return np.where(y >= 3.0, -1.0, s)


_MAX_TP = float(scaled_sigmoid(-1.0))


def _profile(p: str | Profile) -> Profile:
    if isinstance(p, Profile):
        return p
    try:
        return PROFILES[p]
    except KeyError:
        raise ConfigError(f"unknown scoring profile {p!r}; known: {', '.join(PROFILES)}") from None


def _ns(timestamps: Any) -> np.ndarray:
    """Any timestamp array (numpy datetime64, pandas Series/Index, tz-aware or naive = UTC)
    as int64 UTC nanoseconds."""
    if isinstance(timestamps, np.ndarray) and np.issubdtype(timestamps.dtype, np.datetime64):
        return timestamps.astype("datetime64[ns]").astype(np.int64)
    if isinstance(timestamps, pd.Series | pd.Index) and pd.api.types.is_datetime64_any_dtype(
        timestamps.dtype
    ):
        idx = pd.DatetimeIndex(timestamps)
        if idx.tz is not None:
            idx = idx.tz_convert("UTC").tz_localize(None)
        return idx.as_unit("ns").asi8
    return _ns(pd.to_datetime(timestamps, utc=True, format="ISO8601", cache=False))


def _window_ns(windows: Iterable[WindowLike]) -> tuple[np.ndarray, np.ndarray]:
    pairs = sorted((_utc(w[0]).value, _utc(w[1]).value) for w in windows)
    starts = np.array([p[0] for p in pairs], dtype=np.int64)
    ends = np.array([p[1] for p in pairs], dtype=np.int64)
    if len(starts) > 1 and np.any(starts[1:] <= ends[:-1]):
        raise ConfigError("anomaly windows of one series overlap; merge them first")
    if np.any(starts > ends):
        raise ConfigError("an anomaly window starts after it ends")
    return starts, ends


def _sorted_windows(windows: Iterable[WindowLike]) -> list[WindowLike]:
    return sorted(windows, key=lambda w: (_utc(w[0]).value, _utc(w[1]).value))


@dataclass
class _Prepared:
    """Row-to-window assignment of one file, shared by every score."""

    n: int
    scored: np.ndarray  # bool: row after the probation
    flags: np.ndarray  # bool: flagged and scored
    win: np.ndarray  # int: window id of the row (scored rows only), -1 outside
    members: list[np.ndarray]  # per window: its scored row indices, in input order
    n_windows: int  # all windows given (including skipped ones)

    @property
    def scorable(self) -> list[int]:
        return [w for w, m in enumerate(self.members) if len(m)]


def _prepare(ts: Any, flags: Any, windows: Sequence[WindowLike], probation_rows: int) -> _Prepared:
    t = _ns(ts)
    f = np.asarray(flags, dtype=bool)
    if t.shape != f.shape or t.ndim != 1:
        raise ValueError(f"timestamps {t.shape} and flags {f.shape} must be 1-d and alike")
    n = len(t)
    starts, ends = _window_ns(windows)
    scored = np.arange(n) >= max(int(probation_rows), 0)
    # Windows are sorted and disjoint: the only candidate for a row is the last window that
    # starts at or before it.
    cand = np.searchsorted(starts, t, side="right") - 1
    inside = (cand >= 0) & (t <= ends[np.clip(cand, 0, None)]) if len(starts) else cand < -1
    win = np.where(inside & scored, cand, -1)
    order = np.argsort(win, kind="stable")  # stable: input order inside each window
    bounds = np.searchsorted(win[order], np.arange(len(starts) + 1))
    members = [order[bounds[w] : bounds[w + 1]] for w in range(len(starts))]
    return _Prepared(n, scored, f & scored, win, members, len(starts))


def _raw_window_score(p: _Prepared, prof: Profile) -> tuple[float, int, int, int]:
    """NAB raw score of one file: (raw, detected windows, missed windows, FP rows)."""
    raw = 0.0
    detected = missed = 0
    last_idx, widths = [], []
    for w in p.scorable:
        m = p.members[w]
        hit = np.flatnonzero(p.flags[m])
        if len(hit):
            k = int(hit[0])  # earliest detection: sigma is decreasing, so it is the best one
            raw += prof.a_tp * float(scaled_sigmoid(-(len(m) - k) / len(m))) / _MAX_TP
            detected += 1
        else:
            raw -= prof.a_fn
            missed += 1
        last_idx.append(int(m[-1]))
        widths.append(len(m))
    fp_rows = np.flatnonzero(p.flags & (p.win < 0))
    if len(fp_rows):
        y = np.full(len(fp_rows), 3.0)  # no preceding window: full FP cost
        if last_idx:
            order = np.argsort(last_idx)
            li = np.asarray(last_idx)[order]
            wd = np.asarray(widths)[order]
            prev = np.searchsorted(li, fp_rows, side="left") - 1  # last window ending before
            has = prev >= 0
            pi = prev[has]
            y[has] = (fp_rows[has] - li[pi]) / np.maximum(wd[pi] - 1, 1)
        raw += prof.a_fp * float(scaled_sigmoid(y).sum())
    return raw, detected, missed, len(fp_rows)


def window_score(
    timestamps: Any,
    flags: Any,
    windows: Sequence[WindowLike],
    profile: str | Profile = "standard",
    probation_rows: int = 0,
) -> dict[str, Any]:
    """NAB raw score of one series for one profile, with the null and perfect references.

    Returns ``raw``, ``null``, ``perfect``, ``score`` (normalised for this file alone, None
    without scorable windows), ``windows`` (scorable), ``skipped_windows``, ``detected``,
    ``missed`` and ``fp`` (flagged rows outside every window)."""
    prof = _profile(profile)
    p = _prepare(timestamps, flags, windows, probation_rows)
    raw, detected, missed, fp = _raw_window_score(p, prof)
    n_win = len(p.scorable)
    # Perfect: one detection on each window's first row, scoring exactly A_TP (see module doc).
    null, perfect = -prof.a_fn * n_win, prof.a_tp * n_win
    return {
        "profile": prof.name,
        "raw": raw,
        "null": null,
        "perfect": perfect,
        "score": _normalise(raw, null, perfect),
        "windows": n_win,
        "skipped_windows": p.n_windows - n_win,
        "detected": detected,
        "missed": missed,
        "fp": fp,
    }


def _normalise(raw: float, null: float, perfect: float) -> float | None:
    if perfect == null:
        return None
    return 100.0 * (raw - null) / (perfect - null)


def corpus_scores(
    per_file_inputs: Iterable[tuple[Any, Any, Sequence[WindowLike]] | tuple[Any, ...]],
    profiles: Iterable[str | Profile] = tuple(PROFILES),
) -> dict[str, float | None]:
    """Normalised NAB score per profile over a corpus: raw, null and perfect summed over the
    files, then normalised. Each input is ``(timestamps, flags, windows[, probation_rows])``."""
    profs = [_profile(p) for p in profiles]
    sums = {p.name: [0.0, 0.0, 0.0] for p in profs}
    for item in per_file_inputs:
        ts, fl, wins = item[0], item[1], item[2]
        prob = int(item[3]) if len(item) > 3 else 0
        prep = _prepare(ts, fl, wins, prob)
        n_win = len(prep.scorable)
        for p in profs:
            raw = _raw_window_score(prep, p)[0]
            s = sums[p.name]
            s[0] += raw
            s[1] += -p.a_fn * n_win
            s[2] += p.a_tp * n_win
    return {name: _normalise(*s) for name, s in sums.items()}


# --------------------------------------------------------------------------------------------
# Point-wise and event-wise metrics
# --------------------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


@dataclass(frozen=True)
class Metrics:
    """Precision/recall/F1 from counts; addable, so corpus totals are micro-averages.

    Point-wise: ``tp``/``fn`` = flagged/unflagged rows in windows, ``fp`` = flagged rows
    outside, ``tp_pred`` = ``tp``. Event-wise: ``tp``/``fn`` = detected/missed windows,
    ``fp`` = flag events touching no window, ``tp_pred`` = flag events touching a window."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tp_pred: int = 0

    @property
    def precision(self) -> float:
        return _ratio(self.tp_pred, self.tp_pred + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return _ratio(2 * p * r, p + r)

    def __add__(self, other: Metrics) -> Metrics:
        return Metrics(
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.tp_pred + other.tp_pred,
        )

    def to_dict(self) -> dict[str, float | int]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tp_pred": self.tp_pred,
        }


def _point_metrics(p: _Prepared) -> Metrics:
    pos = p.win >= 0
    tp = int(np.count_nonzero(p.flags & pos))
    return Metrics(
        tp=tp,
        fp=int(np.count_nonzero(p.flags & ~pos)),
        fn=int(np.count_nonzero(~p.flags & pos)),
        tp_pred=tp,
    )


def _event_metrics(p: _Prepared) -> tuple[Metrics, np.ndarray]:
    """Event metrics and, per window, whether it was detected."""
    detected = np.array([bool(np.any(p.flags[m])) for m in p.members], dtype=bool)
    scorable = np.array([len(m) > 0 for m in p.members], dtype=bool)
    f = p.flags.astype(np.int8)
    # Maximal runs of consecutive flagged rows, in input order.
    edges = np.diff(np.concatenate(([0], f, [0])))
    run_starts = np.flatnonzero(edges == 1)
    run_ends = np.flatnonzero(edges == -1)  # exclusive
    in_win = np.concatenate(([0], np.cumsum(p.win >= 0)))
    touches = (in_win[run_ends] - in_win[run_starts]) > 0
    n_true = int(np.count_nonzero(touches))
    m = Metrics(
        tp=int(np.count_nonzero(detected & scorable)),
        fp=len(run_starts) - n_true,
        fn=int(np.count_nonzero(~detected & scorable)),
        tp_pred=n_true,
    )
    return m, detected


def point_metrics(
    timestamps: Any, flags: Any, windows: Sequence[WindowLike], probation_rows: int = 0
) -> Metrics:
    return _point_metrics(_prepare(timestamps, flags, windows, probation_rows))


def event_metrics(
    timestamps: Any, flags: Any, windows: Sequence[WindowLike], probation_rows: int = 0
) -> Metrics:
    return _event_metrics(_prepare(timestamps, flags, windows, probation_rows))[0]


# --------------------------------------------------------------------------------------------
# Corpus report
# --------------------------------------------------------------------------------------------


@dataclass
class FileScore:
    rows: int
    scored_rows: int
    flagged: int  # flagged scored rows
    windows: int  # scorable windows
    skipped_windows: int
    raw: dict[str, float]
    null: dict[str, float]
    perfect: dict[str, float]
    point: Metrics
    event: Metrics

    def normalised(self, profile: str) -> float | None:
        return _normalise(self.raw[profile], self.null[profile], self.perfect[profile])

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "scored_rows": self.scored_rows,
            "flagged": self.flagged,
            "windows": self.windows,
            "skipped_windows": self.skipped_windows,
            "scores": {p: self.normalised(p) for p in self.raw},
            "raw": dict(self.raw),
            "point": self.point.to_dict(),
            "event": self.event.to_dict(),
        }


@dataclass
class KindStats:
    windows: int = 0
    detected: int = 0

    @property
    def recall(self) -> float:
        return _ratio(self.detected, self.windows)


@dataclass
class ScoreReport:
    profiles: tuple[str, ...]
    probation: float
    files: dict[str, FileScore] = field(default_factory=dict)
    kinds: dict[str, KindStats] = field(default_factory=dict)
    unlabelled_files: list[str] = field(default_factory=list)

    @property
    def scores(self) -> dict[str, float | None]:
        """Corpus NAB score per profile (raw scores summed before normalising)."""
        out: dict[str, float | None] = {}
        for p in self.profiles:
            raw = sum(f.raw[p] for f in self.files.values())
            null = sum(f.null[p] for f in self.files.values())
            perfect = sum(f.perfect[p] for f in self.files.values())
            out[p] = _normalise(raw, null, perfect)
        return out

    @property
    def point(self) -> Metrics:
        return sum((f.point for f in self.files.values()), Metrics())

    @property
    def event(self) -> Metrics:
        return sum((f.event for f in self.files.values()), Metrics())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (scores.json)."""
        return {
            "profiles": {p: asdict(PROFILES[p]) for p in self.profiles},
            "probation": self.probation,
            "scores": self.scores,
            "point": self.point.to_dict(),
            "event": self.event.to_dict(),
            "totals": {
                "files": len(self.files),
                "rows": sum(f.rows for f in self.files.values()),
                "scored_rows": sum(f.scored_rows for f in self.files.values()),
                "flagged": sum(f.flagged for f in self.files.values()),
                "windows": sum(f.windows for f in self.files.values()),
                "skipped_windows": sum(f.skipped_windows for f in self.files.values()),
            },
            "kinds": {
                k: {"windows": s.windows, "detected": s.detected, "recall": s.recall}
                for k, s in sorted(self.kinds.items())
            },
            "unlabelled_files": list(self.unlabelled_files),
            "files": {rel: f.to_dict() for rel, f in sorted(self.files.items())},
        }

    def tables(self, per_file: bool = False) -> list[Table]:
        """Rich tables: summary per profile, point/event metrics, recall per kind, and
        optionally one row per file."""
        fmt = _fmt
        summary = Table(title="Window score (NAB-style, 0 = never fires, 100 = perfect)")
        summary.add_column("profile")
        summary.add_column("score", justify="right")
        for p, s in self.scores.items():
            summary.add_row(p, fmt(s))

        pr = Table(title="Precision / recall / F1")
        for col in ("view", "precision", "recall", "F1", "TP", "FP", "FN"):
            pr.add_column(col, justify="left" if col == "view" else "right")
        for name, m in (("point-wise", self.point), ("event-wise", self.event)):
            pr.add_row(
                name, fmt(m.precision), fmt(m.recall), fmt(m.f1), str(m.tp), str(m.fp), str(m.fn)
            )
        out = [summary, pr]

        if self.kinds:
            kt = Table(title="Recall per anomaly kind (event-wise)")
            for col in ("kind", "windows", "detected", "recall"):
                kt.add_column(col, justify="left" if col == "kind" else "right")
            for k, s in sorted(self.kinds.items()):
                kt.add_row(k, str(s.windows), str(s.detected), fmt(s.recall))
            out.append(kt)

        if per_file:
            ft = Table(title="Per file")
            ft.add_column("file")
            for col in ("rows", "windows", "flagged", *self.profiles, "point F1", "event F1"):
                ft.add_column(col, justify="right")
            for rel, f in sorted(self.files.items()):
                ft.add_row(
                    rel,
                    str(f.rows),
                    str(f.windows),
                    str(f.flagged),
                    *(fmt(f.normalised(p)) for p in self.profiles),
                    fmt(f.point.f1),
                    fmt(f.event.f1),
                )
            out.append(ft)
        return out

    def render(self, console: Console | None = None, per_file: bool = False) -> None:
        console = console or Console()
        for t in self.tables(per_file):
            console.print(t)


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.1f}" if abs(x) > 1.0 else f"{x:.3f}"


def _timestamps_of(df: pd.DataFrame, rel: str) -> np.ndarray:
    if "timestamp" not in df or "is_anomaly" not in df:
        raise ConfigError(f"result {rel!r} needs the columns timestamp and is_anomaly")
    col = df["timestamp"]
    try:
        return _ns(col).view("datetime64[ns]")
    except (ValueError, TypeError) as e:
        raise ConfigError(f"result {rel!r} has unreadable timestamps: {e}") from None


def score_corpus(
    results: Mapping[str, pd.DataFrame],
    labels: Mapping[str, Sequence[WindowLike]],
    probation: float = DEFAULT_PROBATION,
    profiles: Iterable[str] = tuple(PROFILES),
) -> ScoreReport:
    """Score every result (``timestamp``, ``is_anomaly`` columns, rows in input order) against
    the labels. A result without a labels entry has no anomaly windows (listed in
    ``unlabelled_files``); a labels entry without a result is an error."""
    if not 0.0 <= probation < 1.0:
        raise ConfigError(f"probation must be in [0, 1), got {probation}")
    profs = tuple(_profile(p).name for p in profiles)
    missing = sorted(set(labels) - set(results))
    if missing:
        raise ConfigError(
            f"labels name {len(missing)} file(s) with no result: {', '.join(missing[:5])}"
        )
    report = ScoreReport(profs, probation)
    for rel in sorted(results):
        df = results[rel]
        ts = _timestamps_of(df, rel)
        flags = df["is_anomaly"].to_numpy(dtype=bool, na_value=False)
        if rel not in labels:
            report.unlabelled_files.append(rel)
        wins = _sorted_windows(labels.get(rel, []))
        prob_rows = math.floor(probation * len(ts))
        p = _prepare(ts, flags, wins, prob_rows)
        n_win = len(p.scorable)
        raws = {name: _raw_window_score(p, _profile(name))[0] for name in profs}
        event, detected = _event_metrics(p)
        report.files[rel] = FileScore(
            rows=p.n,
            scored_rows=int(np.count_nonzero(p.scored)),
            flagged=int(np.count_nonzero(p.flags)),
            windows=n_win,
            skipped_windows=p.n_windows - n_win,
            raw=raws,
            null={name: -_profile(name).a_fn * n_win for name in profs},
            perfect={name: _profile(name).a_tp * n_win for name in profs},
            point=_point_metrics(p),
            event=event,
        )
        for w in p.scorable:
            kind = getattr(wins[w], "kind", None) or "unknown"
            ks = report.kinds.setdefault(kind, KindStats())
            ks.windows += 1
            ks.detected += int(detected[w])
    return report
