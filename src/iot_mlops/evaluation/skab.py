"""SKAB's two metrics, computed for every corpus (pure, no I/O).

* **Outlier detection**: every scored row (after the training rows) is one binary decision,
  pooled over all files: the prediction is "in episode" (``in_episode``), the truth is "in a
  labelled window". ``F1 = 2 TP / (2 TP + FP + FN)``, false-alarm rate ``FAR = FP / (FP + TN)``,
  missed-alarm rate ``MAR = FN / (FN + TP)`` (fractions; SKAB's board prints them in per cent).
* **Changepoint detection**: the NAB-style window score (the three profiles, the machinery of
  ``scores``) on windows of 60 s to the right of every true changepoint (see ``windows``),
  where the detector's changepoints are the rows at which an episode opens or closes.

Undefined ratios are 0.0 (as in ``scores``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from iot_mlops.evaluation.scores import _prepare, _profile, _raw_window_score
from iot_mlops.evaluation.windows import changepoint_windows
from iot_mlops.training.metrics import Confusion

# The outlier-detection view's row counts, pooled over files.
Outliers = Confusion


def outliers(scored: np.ndarray, positive: np.ndarray, predicted: np.ndarray) -> Outliers:
    """Counts over the rows where ``scored``: truth ``positive``, prediction ``predicted``."""
    s = np.asarray(scored, dtype=bool)
    pos = np.asarray(positive, dtype=bool) & s
    neg = ~np.asarray(positive, dtype=bool) & s
    pred = np.asarray(predicted, dtype=bool)
    return Outliers(
        tp=int(np.count_nonzero(pred & pos)),
        fp=int(np.count_nonzero(pred & neg)),
        fn=int(np.count_nonzero(~pred & pos)),
        tn=int(np.count_nonzero(~pred & neg)),
    )


@dataclass
class ChangepointScore:
    """One file's changepoint score: raw, null and perfect per profile (summed over a corpus
    before normalising, as NAB does), and the windows."""

    raw: dict[str, float]
    null: dict[str, float]
    perfect: dict[str, float]
    windows: int  # scorable changepoint windows
    detected: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "raw": dict(self.raw),
            "windows": self.windows,
            "detected": self.detected,
        }


def changepoint_score(
    ts_ns: np.ndarray,
    changes: np.ndarray,
    windows: list[Any],
    probation_rows: int,
    profiles: tuple[str, ...],
    given: np.ndarray | None = None,
) -> ChangepointScore:
    """The NAB-style score of one file's detected changepoints (``changes``: rows where an
    episode opens or closes) against the changepoint windows of its labelled ``windows`` (or
    of the ``given`` true changepoints, UTC ns)."""
    cp_windows = changepoint_windows(ts_ns, windows, given=given)
    p = _prepare(ts_ns.view("datetime64[ns]"), changes, cp_windows, probation_rows)
    n_win = len(p.scorable)
    raw, null, perfect = {}, {}, {}
    detected = 0
    for name in profiles:
        prof = _profile(name)
        raw[name], detected, _, _ = _raw_window_score(p, prof)
        null[name] = -prof.a_fn * n_win
        perfect[name] = prof.a_tp * n_win
    return ChangepointScore(raw, null, perfect, n_win, detected)
