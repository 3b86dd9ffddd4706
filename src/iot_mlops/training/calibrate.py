"""Holdout evaluation and calibration of a fitted model (``evaluate_holdout``), in steps:

1. accuracy: a clean-context backtest (labelled points hidden) gives MASE, WQL and interval
   coverage on clean points;
2. calibration: the clean holdout runs through the detector's own engine (block-aligned
   forecasts, per-series adaptation, context cleaning, regime acceptance, alarm hygiene) and
   the threshold is fitted to its deviations for the target false-alarm rate;
3. quality, when the holdout has labels: the holdout replayed through the engine with that
   calibration gives precision, recall, F1 and event recall against the labels.

So the threshold is fitted to, and the quality measured on, what runs live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from iot_mlops.config import Settings
from iot_mlops.errors import ModelError
from iot_mlops.model.forecaster import Forecaster
from iot_mlops.model.pyfunc import ForecastModel
from iot_mlops.progress import Reporter
from iot_mlops.scoring.calibrate import Calibration, calibrate, fit_step_scale
from iot_mlops.scoring.rules import engine_options
from iot_mlops.training.backtest import MAX_BACKTEST_WINDOWS, Backtest, backtest, windows
from iot_mlops.training.metrics import confusion, mase_scale, wql
from iot_mlops.training.replay import ReplayResult, ReplaySeries, replay
from iot_mlops.training.split import SplitSeries, segments


@dataclass
class Evaluation:
    metrics: dict[str, float]
    calibration: Calibration
    clean: Backtest
    replay: ReplayResult | None


def evaluate_holdout(
    model: ForecastModel, series: list[SplitSeries], settings: Settings, reporter: Reporter
) -> Evaluation:
    pl, cl = settings.prediction_length, settings.context_length
    levels = sorted(float(q) for q in settings.quantile_levels)
    # The model has no calibration yet (this pass computes it): the engine reads the interval
    # of the quantiles the calibration will use, and replay never fires while collecting.
    engine_model = Forecaster(
        model, name="candidate", version="candidate",
        calibration=Calibration(levels[0], levels[-1]),
    )  # fmt: skip
    engine_model.enable_fast_path()  # the detector's path, and a faster calibration
    n_win = len(windows(series, pl, MAX_BACKTEST_WINDOWS))
    with reporter.phase("backtest on the holdout (clean context)", total=n_win):
        clean = backtest(engine_model, series, pl, cl, hide_labels=True, on_window=reporter.advance)
    metrics = accuracy(clean, series, levels)
    metrics["backtest_windows"] = float(clean.n_windows)
    metrics["predict_seconds_per_window"] = clean.predict_seconds / max(clean.n_windows, 1)

    rseries = replay_series(series)
    options = engine_options(settings)
    n_blocks = _n_blocks(series, pl)
    with reporter.phase("calibrate: clean holdout through the detector's engine", total=n_blocks):
        cal_run = replay(
            engine_model, rseries, None, options, hide_labels=True, on_block=reporter.advance,
        )  # fmt: skip
    calibration = _fit_threshold(cal_run, rseries, settings, levels, metrics)

    run = None
    n_labels = sum(int(s.label[s.start :].sum()) for s in series)
    metrics["holdout_labelled_points"] = float(n_labels)
    if n_labels:
        with reporter.phase("replay the holdout through the detector's engine", total=n_blocks):
            run = replay(
                engine_model, rseries, calibration, options, on_block=reporter.advance,
            )  # fmt: skip
        metrics.update(replay_quality(run, series))
    return Evaluation(metrics, calibration, clean, run)


def accuracy(clean: Backtest, series: list[SplitSeries], levels: list[float]) -> dict[str, float]:
    """MASE, WQL and interval coverage on clean points: unlabelled, observed, forecast."""
    lo_q, hi_q = levels[0], levels[-1]
    ratios: list[float] = []
    actual_all, q_all = [], {q: [] for q in levels}
    inside = total = 0
    for s in series:
        mean = clean.mean[s.item_id]
        qs = clean.quantiles[s.item_id]
        mask = np.isfinite(s.y) & ~s.label & np.isfinite(mean)
        mask[: s.start] = False
        if not mask.any():
            continue
        scale = mase_scale(np.where(s.label[: s.start], np.nan, s.y[: s.start]))
        if math.isfinite(scale):
            ratios.append(float(np.abs(s.y[mask] - mean[mask]).mean() / scale))
        y = s.y[mask]
        actual_all.append(y)
        for q in levels:
            q_all[q].append(qs[q][mask])
        inside += int(((y >= qs[lo_q][mask]) & (y <= qs[hi_q][mask])).sum())
        total += len(y)
    if not total:
        raise ModelError("no clean holdout points to evaluate and calibrate on")
    return {
        "mase": float(np.mean(ratios)) if ratios else float("nan"),
        "wql": wql(np.concatenate(actual_all), {q: np.concatenate(v) for q, v in q_all.items()}),
        "coverage": inside / total,
    }


def _fit_threshold(
    cal_run: ReplayResult,
    rseries: list[ReplaySeries],
    settings: Settings,
    levels: list[float],
    metrics: dict[str, float],
) -> Calibration:
    keys = [r.key for r in rseries]
    devs = np.concatenate([cal_run.deviation[k][cal_run.scored[k]] for k in keys])
    if not len(devs):
        raise ModelError("no clean holdout points to evaluate and calibrate on")
    scale: tuple[float, ...] = ()
    if settings.calibrate_step_scale:
        steps = np.concatenate([cal_run.horizon_step[k][cal_run.scored[k]] for k in keys])
        scale = fit_step_scale(devs, steps, settings.prediction_length)
        if scale:
            devs = devs / np.asarray(scale)[steps]
            metrics["step_scale_first"] = scale[0]
            metrics["step_scale_max_ratio"] = max(scale) / min(scale)
    rate = settings.target_false_alarm_rate
    calibration = calibrate(devs.tolist(), rate, levels[0], levels[-1], scale)
    metrics.update(
        threshold=calibration.threshold,
        calibration_points=float(len(devs)),
        clean_false_alarm_rate=float(np.mean(devs >= calibration.threshold)),
    )
    return calibration


def replay_quality(run: ReplayResult, series: list[SplitSeries]) -> dict[str, float]:
    """Point-wise precision/recall/F1 of the replay's alarms, and event recall."""
    preds, labels = [], []
    events = caught = 0
    for s in series:
        scored = run.scored[s.item_id]
        preds.extend(run.alarm[s.item_id][scored].tolist())
        labels.extend(s.label[scored].tolist())
        for lo, hi in segments(s.label & scored):
            events += 1
            caught += bool(run.alarm[s.item_id][lo:hi].any())
    c = confusion(preds, labels)
    # Point-wise recall undercounts drifts and level shifts (the forecast adapts after their
    # first points); an anomaly event counts as caught when any of its points alarms.
    return {
        "labelled_events": float(events),
        "event_recall": caught / events if events else 0.0,
        "precision": c.precision,
        "recall": c.recall,
        "f1": c.f1,
        "replay_tp": float(c.tp),
        "replay_fp": float(c.fp),
        "replay_fn": float(c.fn),
    }


def replay_series(series: list[SplitSeries]) -> list[ReplaySeries]:
    return [
        ReplaySeries(
            key=s.item_id,
            timestamps_ms=s.timestamps.as_unit("ms").asi8,
            values=s.y,
            labels=s.label,
            start=s.start,
        )
        for s in series
    ]


def _n_blocks(series: list[SplitSeries], prediction_length: int) -> int:
    return max(math.ceil((s.n - s.start) / prediction_length) for s in series) + 1
