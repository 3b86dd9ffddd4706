"""Training's report: point-wise precision and recall of predicted alarms against labels, and
the forecast accuracy metrics (MASE scale, weighted quantile loss) on clean points."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Self

import numpy as np


def ratio(num: float, den: float) -> float:
    return num / den if den else 0.0  # an undefined ratio is 0.0


@dataclass(frozen=True)
class Confusion:
    """Counts of binary decisions against labels; addable, so totals pool over files (micro-
    averages). ``tp_pred`` is the number of true predictions where it differs from ``tp``:
    event-wise, a flag event touching a window is one true prediction, a detected window one
    true positive, and the two are not one-to-one. Unset, it is ``tp``."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    tp_pred: int | None = None

    @property
    def true_predictions(self) -> int:
        return self.tp if self.tp_pred is None else self.tp_pred

    @property
    def precision(self) -> float:
        return ratio(self.true_predictions, self.true_predictions + self.fp)

    @property
    def recall(self) -> float:
        return ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return ratio(2 * p * r, p + r)

    @property
    def far(self) -> float:
        """False-alarm rate: FP / (FP + TN)."""
        return ratio(self.fp, self.fp + self.tn)

    @property
    def mar(self) -> float:
        """Missed-alarm rate: FN / (FN + TP)."""
        return ratio(self.fn, self.fn + self.tp)

    def __add__(self, other: Confusion) -> Self:
        both_unset = self.tp_pred is None and other.tp_pred is None
        return type(self)(
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.tn + other.tn,
            None if both_unset else self.true_predictions + other.true_predictions,
        )

    def counts(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn}

    def to_dict(self) -> dict[str, float | int]:
        return {"f1": self.f1, "far": self.far, "mar": self.mar, **self.counts()}


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
