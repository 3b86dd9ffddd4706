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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from iot_mlops.errors import ConfigError
from iot_mlops.evaluation.windows import Window, WindowLike, _utc, load_labels
from iot_mlops.training.metrics import Confusion

__all__ = [
    "DEFAULT_PROBATION",
    "PROFILES",
    "Metrics",
    "Profile",
    "Window",
    "corpus_scores",
    "event_metrics",
    "load_labels",
    "point_metrics",
    "scaled_sigmoid",
    "window_score",
]


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


@dataclass(frozen=True)
class Metrics(Confusion):
    """Precision/recall/F1 from counts; addable, so corpus totals are micro-averages.

    Point-wise: ``tp``/``fn`` = flagged/unflagged rows in windows, ``fp`` = flagged rows
    outside, ``tp_pred`` = ``tp``. Event-wise: ``tp``/``fn`` = detected/missed windows,
    ``fp`` = flag events touching no window, ``tp_pred`` = flag events touching a window."""

    def to_dict(self) -> dict[str, float | int]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tp_pred": self.true_predictions,
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


def __getattr__(name: str) -> Any:
    """The corpus report lives in ``score_report`` (it builds on this module); its names stay
    importable from here."""
    if name in ("ScoreReport", "FileScore", "KindStats", "score_corpus"):
        from iot_mlops.evaluation import score_report

        return getattr(score_report, name)
    raise AttributeError(name)
