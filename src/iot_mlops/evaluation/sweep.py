"""The NAB-style window scores at the best threshold over ``anomaly_score`` (pure, no I/O).

The detector decides at its own threshold (score 0.5, with episodes); a benchmark also asks
how well its scores *rank*: the best any threshold could do. For a threshold ``t``, a row is a
detection when its score reaches ``t`` and the row before did not (a rising crossing: one
detection per excursion, as an onset is one per departure; no episode hold). The corpus score
per profile is taken at each candidate ``t`` and the best is kept, never firing (0.0) included,
so "the best threshold is never firing" says that no threshold separates.

Candidates: the detector's own 0.5 and the scores' upper quantiles ``1 - 10**-x`` for ``x``
from 0.5 to 5 (the rare end, where a threshold that fires at a sane rate lies).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from iot_mlops.evaluation.scores import _normalise, _Prepared, _profile, _raw_window_score

_QUANTILE_EXPONENTS = np.linspace(0.5, 5.0, 28)


@dataclass(frozen=True)
class BestThreshold:
    threshold: float | None  # None: never firing scores best
    score: float | None  # normalised corpus score there (None: no scorable window)

    def to_dict(self) -> dict[str, float | None]:
        return {"threshold": self.threshold, "score": self.score}


def crossings(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Rows whose score reaches ``threshold`` when the row before's did not (NaN: below)."""
    above = np.nan_to_num(scores, nan=-np.inf) >= threshold
    return above & ~np.concatenate(([False], above[:-1]))


@dataclass
class ThresholdSweep:
    """Files added one by one (their prepared rows and scores), swept at the end."""

    profiles: tuple[str, ...]
    files: list[tuple[_Prepared, np.ndarray]] = field(default_factory=list)

    def add(self, prepared: _Prepared, scores: np.ndarray) -> None:
        self.files.append((prepared, np.asarray(scores, dtype=np.float64)))

    def candidates(self) -> np.ndarray:
        scored = [s[p.scored] for p, s in self.files]
        pooled = np.concatenate(scored) if scored else np.empty(0)
        pooled = pooled[np.isfinite(pooled)]
        if not len(pooled):
            return np.array([0.5])
        qs = np.quantile(pooled, 1.0 - 10.0**-_QUANTILE_EXPONENTS)
        return np.unique(np.concatenate(([0.5], qs)))

    def best(self) -> dict[str, BestThreshold]:
        """Per profile, the threshold with the highest corpus score (ties: the higher one)."""
        profs = [_profile(p) for p in self.profiles]
        null = {p.name: sum(-p.a_fn * len(f.scorable) for f, _ in self.files) for p in profs}
        perfect = {p.name: sum(p.a_tp * len(f.scorable) for f, _ in self.files) for p in profs}
        never = {p.name: _normalise(null[p.name], null[p.name], perfect[p.name]) for p in profs}
        out = {name: BestThreshold(None, s) for name, s in never.items()}
        for t in self.candidates():
            raw = dict.fromkeys(null, 0.0)
            for prep, scores in self.files:
                flagged = replace(prep, flags=crossings(scores, float(t)) & prep.scored)
                for p in profs:
                    raw[p.name] += _raw_window_score(flagged, p)[0]
            for p in profs:
                s = _normalise(raw[p.name], null[p.name], perfect[p.name])
                cur = out[p.name]
                # Ties go to the higher threshold, but never to one over never firing.
                tie = cur.threshold is not None and s == cur.score
                if s is not None and (cur.score is None or s > cur.score or tie):
                    out[p.name] = BestThreshold(float(t), s)
        return out
