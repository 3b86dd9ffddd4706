"""The corpus report of ``evaluate``: every score of every file (NAB-style window scores,
point- and event-wise metrics, SKAB's outlier and changepoint metrics, the share of rows at
the top score), summed over the corpus, as JSON and as rich tables (pure, no I/O).

What each figure counts (the episode contract of DESIGN.md): the NAB-style window scores and
the point/event metrics count *onsets* (``is_anomaly``); SKAB's outlier F1/FAR/MAR counts
*in-episode* rows (``in_episode``; absent: ``is_anomaly``); the changepoint score counts the
rows where an episode opens or closes (``is_anomaly`` or ``closed``; ``closed`` absent: the
rows where ``in_episode`` turns false)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from iot_mlops.errors import ConfigError
from iot_mlops.evaluation.scores import (
    DEFAULT_PROBATION,
    PROFILES,
    Metrics,
    _event_metrics,
    _normalise,
    _ns,
    _point_metrics,
    _prepare,
    _profile,
    _raw_window_score,
    _sorted_windows,
)
from iot_mlops.evaluation.skab import ChangepointScore, Outliers, changepoint_score, outliers
from iot_mlops.evaluation.sweep import BestThreshold, ThresholdSweep
from iot_mlops.evaluation.windows import WindowLike
from iot_mlops.training.metrics import ratio


@dataclass
class FileScore:
    rows: int
    scored_rows: int
    flagged: int  # flagged (onset) scored rows
    windows: int  # scorable windows
    skipped_windows: int
    raw: dict[str, float]
    null: dict[str, float]
    perfect: dict[str, float]
    point: Metrics
    event: Metrics
    outliers: Outliers = field(default_factory=Outliers)
    changepoints: ChangepointScore | None = None

    def normalised(self, profile: str) -> float | None:
        return _normalise(self.raw[profile], self.null[profile], self.perfect[profile])

    def to_dict(self) -> dict[str, Any]:
        d = {
            "rows": self.rows,
            "scored_rows": self.scored_rows,
            "flagged": self.flagged,
            "windows": self.windows,
            "skipped_windows": self.skipped_windows,
            "scores": {p: self.normalised(p) for p in self.raw},
            "raw": dict(self.raw),
            "point": self.point.to_dict(),
            "event": self.event.to_dict(),
            "outliers": self.outliers.to_dict(),
        }
        if self.changepoints is not None:
            d["changepoints"] = self.changepoints.to_dict()
        return d


@dataclass
class KindStats:
    windows: int = 0
    detected: int = 0

    @property
    def recall(self) -> float:
        return ratio(self.detected, self.windows)


@dataclass
class TopScore:
    """The highest score of any scored row and how many scored rows have it: a score that
    ranks has almost no mass at its top value."""

    score: float = 0.0
    rows: int = 0
    scored_rows: int = 0

    @property
    def share(self) -> float:
        return ratio(self.rows, self.scored_rows)

    def add(self, scores: np.ndarray) -> None:
        if not len(scores):
            return
        top = float(scores.max())
        n = int(np.count_nonzero(scores == top))
        if self.scored_rows == 0 or top > self.score:
            self.score, self.rows = top, n
        elif top == self.score:
            self.rows += n
        self.scored_rows += len(scores)

    def to_dict(self) -> dict[str, float | int]:
        return {"score": self.score, "rows": self.rows, "share": self.share}


@dataclass
class ScoreReport:
    profiles: tuple[str, ...]
    probation: float
    files: dict[str, FileScore] = field(default_factory=dict)
    kinds: dict[str, KindStats] = field(default_factory=dict)
    unlabelled_files: list[str] = field(default_factory=list)
    train_rows: int | None = None  # fixed training rows per file (instead of the share)
    top: TopScore = field(default_factory=TopScore)
    sweep: ThresholdSweep | None = None  # files with scores, for the best threshold
    _best: dict[str, BestThreshold] | None = field(default=None, repr=False)

    @property
    def best_thresholds(self) -> dict[str, BestThreshold]:
        """Per profile, the corpus score at the best threshold over ``anomaly_score``."""
        if self._best is None:
            sweep = self.sweep or ThresholdSweep(self.profiles)
            self._best = sweep.best()
        return self._best

    def _normalised(self, attr: str) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for p in self.profiles:
            parts = [getattr(f, attr) if attr else f for f in self.files.values()]
            parts = [x for x in parts if x is not None]
            raw = sum(x.raw[p] for x in parts)
            null = sum(x.null[p] for x in parts)
            perfect = sum(x.perfect[p] for x in parts)
            out[p] = _normalise(raw, null, perfect)
        return out

    @property
    def scores(self) -> dict[str, float | None]:
        """Corpus NAB score per profile (raw scores summed before normalising)."""
        return self._normalised("")

    @property
    def changepoint_scores(self) -> dict[str, float | None]:
        """SKAB's changepoint score per profile (NAB-style, over the changepoint windows)."""
        return self._normalised("changepoints")

    @property
    def point(self) -> Metrics:
        return sum((f.point for f in self.files.values()), Metrics())

    @property
    def event(self) -> Metrics:
        return sum((f.event for f in self.files.values()), Metrics())

    @property
    def outliers(self) -> Outliers:
        """SKAB's outlier-detection counts, pooled over every scored row of every file."""
        return sum((f.outliers for f in self.files.values()), Outliers())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (scores.json)."""
        fs = self.files.values()
        cps = [f.changepoints for f in fs if f.changepoints is not None]
        return {
            "profiles": {p: asdict(PROFILES[p]) for p in self.profiles},
            "probation": self.probation,
            "train_rows": self.train_rows,
            "scores": self.scores,
            "best_threshold": {p: b.to_dict() for p, b in self.best_thresholds.items()},
            "point": self.point.to_dict(),
            "event": self.event.to_dict(),
            "skab": {
                "outliers": self.outliers.to_dict(),
                "changepoints": {
                    "scores": self.changepoint_scores,
                    "windows": sum(c.windows for c in cps),
                    "detected": sum(c.detected for c in cps),
                },
            },
            "top_score": self.top.to_dict(),
            "totals": {
                "files": len(self.files),
                "rows": sum(f.rows for f in fs),
                "scored_rows": sum(f.scored_rows for f in fs),
                "flagged": sum(f.flagged for f in fs),
                "windows": sum(f.windows for f in fs),
                "skipped_windows": sum(f.skipped_windows for f in fs),
            },
            "kinds": {
                k: {"windows": s.windows, "detected": s.detected, "recall": s.recall}
                for k, s in sorted(self.kinds.items())
            },
            "unlabelled_files": list(self.unlabelled_files),
            "files": {rel: f.to_dict() for rel, f in sorted(self.files.items())},
        }

    def tables(self, per_file: bool = False) -> list[Table]:
        """Rich tables: window and changepoint scores per profile, point/event metrics, SKAB's
        outlier metrics and the top score, recall per kind, and optionally one row per file."""
        out = [self._score_table(), self._metrics_table(), self._skab_table()]
        if self.kinds:
            kt = Table(title="Recall per anomaly kind (event-wise)")
            for col in ("kind", "windows", "detected", "recall"):
                kt.add_column(col, justify="left" if col == "kind" else "right")
            for k, s in sorted(self.kinds.items()):
                kt.add_row(k, str(s.windows), str(s.detected), _fmt(s.recall))
            out.append(kt)
        if per_file:
            out.append(self._file_table())
        return out

    def _score_table(self) -> Table:
        t = Table(title="Window score (NAB-style, 0 = never fires, 100 = perfect)")
        t.add_column("profile")
        t.add_column("score (onsets)", justify="right")
        t.add_column("at the best threshold", justify="right")
        t.add_column("changepoint score (SKAB)", justify="right")
        cps, best = self.changepoint_scores, self.best_thresholds
        for p, s in self.scores.items():
            b = best[p]
            at = "never fire" if b.threshold is None else f"{b.threshold:.4g}"
            t.add_row(p, _fmt(s), f"{_fmt(b.score)} ({at})", _fmt(cps[p]))
        return t

    def _metrics_table(self) -> Table:
        t = Table(title="Precision / recall / F1 (onsets)")
        for col in ("view", "precision", "recall", "F1", "TP", "FP", "FN"):
            t.add_column(col, justify="left" if col == "view" else "right")
        for name, m in (("point-wise", self.point), ("event-wise", self.event)):
            t.add_row(
                name, _fmt(m.precision), _fmt(m.recall), _fmt(m.f1), str(m.tp), str(m.fp),
                str(m.fn),
            )  # fmt: skip
        return t

    def _skab_table(self) -> Table:
        o, top = self.outliers, self.top
        t = Table(title="Outlier detection (SKAB: in-episode rows, pooled) and the top score")
        for col in ("F1", "FAR %", "MAR %", "TP", "FP", "FN", "TN", "top score", "rows at top"):
            t.add_column(col, justify="right")
        t.add_row(
            _fmt(o.f1), f"{100 * o.far:.2f}", f"{100 * o.mar:.2f}", str(o.tp), str(o.fp),
            str(o.fn), str(o.tn), f"{top.score:.6g}", f"{top.rows:,} ({100 * top.share:.3f} %)",
        )  # fmt: skip
        return t

    def _file_table(self) -> Table:
        ft = Table(title="Per file")
        ft.add_column("file")
        cols = ("rows", "windows", "flagged", *self.profiles, "point F1", "event F1", "SKAB F1")
        for col in cols:
            ft.add_column(col, justify="right")
        for rel, f in sorted(self.files.items()):
            ft.add_row(
                rel, str(f.rows), str(f.windows), str(f.flagged),
                *(_fmt(f.normalised(p)) for p in self.profiles),
                _fmt(f.point.f1), _fmt(f.event.f1), _fmt(f.outliers.f1),
            )  # fmt: skip
        return ft

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


def _bool_column(df: pd.DataFrame, name: str, default: np.ndarray) -> np.ndarray:
    if name not in df:
        return default
    return df[name].to_numpy(dtype=bool, na_value=False)


def detected_changes(
    onset: np.ndarray, in_episode: np.ndarray, closed: np.ndarray | None
) -> np.ndarray:
    """Rows where an episode opens (an onset) or closes (``closed``; absent: the rows where
    ``in_episode`` turns false)."""
    if closed is None:
        prev = np.concatenate(([False], in_episode[:-1]))
        closed = prev & ~in_episode
    return onset | closed


def probation_rows_of(n: int, probation: float, train_rows: int | None) -> int:
    """Rows of a file that are trained on and not scored."""
    return min(int(train_rows), n) if train_rows is not None else math.floor(probation * n)


def score_corpus(
    results: Mapping[str, pd.DataFrame],
    labels: Mapping[str, Sequence[WindowLike]],
    probation: float = DEFAULT_PROBATION,
    profiles: Iterable[str] = tuple(PROFILES),
    train_rows: int | None = None,
    changepoints: Mapping[str, np.ndarray] | None = None,
) -> ScoreReport:
    """Score every result (columns ``timestamp``, ``is_anomaly``, optionally ``in_episode``,
    ``closed`` and ``anomaly_score``; rows in input order) against the labels. The first
    ``train_rows`` rows of each file (when given) or its first ``floor(probation * rows)``
    are not scored. ``changepoints`` (UTC ns per file) replace a file's label transitions as
    the true changepoints of the changepoint score. A result without a labels entry has no
    anomaly windows (listed in ``unlabelled_files``); a labels entry without a result is an
    error."""
    if not 0.0 <= probation < 1.0:
        raise ConfigError(f"probation must be in [0, 1), got {probation}")
    if train_rows is not None and train_rows < 0:
        raise ConfigError(f"train_rows must be >= 0, got {train_rows}")
    profs = tuple(_profile(p).name for p in profiles)
    missing = sorted(set(labels) - set(results))
    if missing:
        raise ConfigError(
            f"labels name {len(missing)} file(s) with no result: {', '.join(missing[:5])}"
        )
    report = ScoreReport(profs, probation, train_rows=train_rows, sweep=ThresholdSweep(profs))
    for rel in sorted(results):
        if rel not in labels:
            report.unlabelled_files.append(rel)
        cps = (changepoints or {}).get(rel)
        _score_file(report, rel, results[rel], _sorted_windows(labels.get(rel, [])), cps)
    return report


def _score_file(
    report: ScoreReport, rel: str, df: pd.DataFrame, wins: list[Any], cps: np.ndarray | None
) -> None:
    profs = report.profiles
    ts = _timestamps_of(df, rel)
    onset = df["is_anomaly"].to_numpy(dtype=bool, na_value=False)
    in_episode = _bool_column(df, "in_episode", onset)
    closed = _bool_column(df, "closed", None) if "closed" in df else None  # type: ignore[arg-type]
    prob_rows = probation_rows_of(len(ts), report.probation, report.train_rows)
    p = _prepare(ts, onset, wins, prob_rows)
    n_win = len(p.scorable)
    event, detected = _event_metrics(p)
    changes = detected_changes(onset, in_episode, closed)
    report.files[rel] = FileScore(
        rows=p.n,
        scored_rows=int(np.count_nonzero(p.scored)),
        flagged=int(np.count_nonzero(p.flags)),
        windows=n_win,
        skipped_windows=p.n_windows - n_win,
        raw={name: _raw_window_score(p, _profile(name))[0] for name in profs},
        null={name: -_profile(name).a_fn * n_win for name in profs},
        perfect={name: _profile(name).a_tp * n_win for name in profs},
        point=_point_metrics(p),
        event=event,
        outliers=outliers(p.scored, p.win >= 0, in_episode),
        changepoints=changepoint_score(ts.view(np.int64), changes, wins, prob_rows, profs, cps),
    )
    if "anomaly_score" in df:
        scores = df["anomaly_score"].to_numpy(dtype=np.float64, na_value=np.nan)
        report.top.add(scores[p.scored])
        if report.sweep is not None:
            report.sweep.add(p, scores)
    for w in p.scorable:
        kind = getattr(wins[w], "kind", None) or "unknown"
        ks = report.kinds.setdefault(kind, KindStats())
        ks.windows += 1
        ks.detected += int(detected[w])
