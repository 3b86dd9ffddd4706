"""Training's report: point-wise precision and recall of predicted alarms against labels, and
the forecast accuracy metrics (MASE scale, weighted quantile loss) on clean points."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def confusion(predicted: Iterable[bool], labels: Iterable[bool]) -> Confusion:
    tp = fp = fn = tn = 0
    for p, y in zip(predicted, labels, strict=True):
        if p and y:
            tp += 1
        elif p:
            fp += 1
        elif y:
            fn += 1
        else:
            tn += 1
    return Confusion(tp, fp, fn, tn)


def mase_scale(history: np.ndarray) -> float:
    """Mean absolute one-step naive error on the training part: MASE's denominator. Lag 1,
    because seasonal lags (1440 for minute data) are longer than many training series."""
    h = history[np.isfinite(history)]
    if len(h) < 2:
        return float("nan")
    d = np.abs(np.diff(h))
    s = float(d.mean())
    return s if s > 0 else float("nan")


def wql(actual: np.ndarray, quantiles: dict[float, np.ndarray]) -> float:
    """Weighted quantile loss (AutoGluon's WQL): 2·Σ pinball / Σ|y|, averaged over levels."""
    denom = float(np.abs(actual).sum())
    if denom == 0 or len(actual) == 0:
        return float("nan")
    losses = []
    for q, pred in quantiles.items():
        diff = actual - pred
        losses.append(2.0 * float(np.maximum(q * diff, (q - 1) * diff).sum()) / denom)
    return float(np.mean(losses))
