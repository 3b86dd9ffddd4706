"""Train, evaluate, calibrate, log and register the forecaster (``iot-mlops train``).

1. Read the readings parquet, regularise each series onto one shared grid (the frequency is
   inferred and checked), and mask labelled anomalies out of the training target (NaN; AutoGluon
   fills), so the model learns normal behaviour only.
2. Hold out the last ``holdout_fraction`` of every series and fit AutoGluon on the rest with an
   explicit offline model set (nothing is downloaded) and a time limit.
3. Rolling-origin backtest over the holdout, in steps of ``prediction_length`` and with the
   detector's context length, one batched predict call per window:
   * pass 1 (labelled points hidden from the context): MASE, WQL, interval coverage, and the
     anomaly threshold calibrated on clean points for the target false-alarm rate;
   * pass 2, when the holdout has labels: the detector's replay: raw context, each point scored
     with ``iot_mlops.scoring`` (the detector's code), outliers replaced by the forecast median
     in later contexts, giving precision, recall and F1 against the labels.
4. One MLflow run: params, metrics, leaderboard CSV, a forecast-vs-actual PNG, and the pyfunc
   (models-from-code) carrying the predictor and its calibration; registered, optionally
   promoted through the same gate as ``iot-mlops promote``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iot_mlops.config import Settings
from iot_mlops.errors import ConfigError, ModelError
from iot_mlops.model import pyfunc
from iot_mlops.model.forecaster import (
    Forecaster,
    PreparedData,
    mase_scale,
    min_series_length,
    prepare,
    wql,
)
from iot_mlops.model.metadata import ModelMetadata
from iot_mlops.model.pyfunc import METADATA_ARTIFACT, PREDICTOR_ARTIFACT, ForecastModel
from iot_mlops.progress import Reporter
from iot_mlops.scoring.alarms import AlarmPolicy, AlarmState
from iot_mlops.scoring.calibrate import Calibration, calibrate
from iot_mlops.scoring.channels import score_point
from iot_mlops.training.metrics import confusion
from iot_mlops.training.replay import ReplayResult, ReplaySeries
from iot_mlops.training.replay import replay as run_replay

# Pretrained foundation models need a model hub, which nothing here can reach.
PRETRAINED = ("Chronos", "Chronos2", "Chronos-2", "Toto", "Toto2")
# Rolling windows evaluated on the holdout at most; beyond, windows are strided evenly.
MAX_BACKTEST_WINDOWS = 120
# Date features that a few days of training data cannot support: a tree model would see one
# value of day_of_year in training and extrapolate blindly on the next day.
_LONG_DATE_FEATURES = {"day_of_month", "day_of_year", "week_of_year", "month_of_year"}


# --- data -------------------------------------------------------------------------------------


def read_parquet(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"training data {str(path)!r} does not exist",
            fix="create it with `iot-mlops collect --out PATH` or "
            "`iot-mlops simulate --hours 24 --parquet PATH`",
        )
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # any unreadable file is the user's input problem
        raise ConfigError(f"cannot read {str(path)!r} as parquet: {e}") from None
    if df.empty:
        raise ConfigError(
            f"training data {str(path)!r} has no rows",
            fix="collect or simulate some history first",
        )
    return df


def data_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class Series:
    """One series on its grid, split into fit part ``[:start]`` and holdout ``[start:]``."""

    item_id: str
    timestamps: pd.DatetimeIndex
    y: np.ndarray
    label: np.ndarray
    start: int

    @property
    def n(self) -> int:
        return len(self.y)


def split_series(
    data: PreparedData, prediction_length: int, holdout_fraction: float
) -> tuple[list[Series], list[str]]:
    """Per-series holdout split; too-short series are dropped (all too short → error)."""
    need = min_series_length(prediction_length, holdout_fraction)
    series: list[Series] = []
    dropped: list[str] = []
    for item, g in data.frame.groupby("item_id", sort=True):
        n = len(g)
        if n < need:
            dropped.append(f"{item} ({n} points)")
            continue
        holdout = max(math.ceil(n * holdout_fraction), prediction_length)
        series.append(
            Series(
                item_id=str(item),
                timestamps=pd.DatetimeIndex(g["timestamp"].to_numpy()),
                y=g["target"].to_numpy(dtype="float64"),
                label=g["is_anomaly"].to_numpy(dtype=bool),
                start=n - holdout,
            )
        )
    if not series:
        longest = int(data.frame.groupby("item_id").size().max())
        raise ConfigError(
            f"every series is too short: with prediction_length {prediction_length} and a "
            f"{holdout_fraction:.0%} holdout each series needs at least {need} points at "
            f"{data.freq}; the longest has {longest}",
            fix="collect more history, or lower --prediction-length",
        )
    return series, dropped


def training_frame(series: list[Series]) -> pd.DataFrame:
    """The fit part of every series, labelled anomalies masked to NaN."""
    parts = []
    for s in series:
        y = s.y[: s.start].copy()
        y[s.label[: s.start]] = np.nan
        parts.append(
            pd.DataFrame({"item_id": s.item_id, "timestamp": s.timestamps[: s.start], "target": y})
        )
    return pd.concat(parts, ignore_index=True)


# --- model set --------------------------------------------------------------------------------


def parse_models(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    from autogluon.timeseries.models.registry import ModelRegistry

    names = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [m for m in names if m]
    if not names:
        raise ConfigError("no models given", fix="e.g. --models DirectTabular,RecursiveTabular")
    known = sorted(
        a
        for a in ModelRegistry.available_aliases()
        if not a.startswith("Abstract") and a != "MultiWindowBacktesting"
    )
    for m in names:
        if m in PRETRAINED:
            raise ConfigError(
                f"{m} is a pretrained model that must be downloaded from a model hub, "
                "which is not reachable here",
                fix="choose offline models, e.g. DirectTabular,RecursiveTabular,SeasonalNaive,ETS",
            )
        if m not in known:
            raise ConfigError(
                f"unknown AutoGluon model {m!r}",
                fix=f"choose from: {', '.join(k for k in known if k not in PRETRAINED)}",
            )
    return names


def hyperparameters(
    models: list[str], freq: str, context_length: int, span: pd.Timedelta
) -> dict[str, dict[str, Any]]:
    """Per-model settings that make training match how the detector runs the model."""
    from autogluon.timeseries.models.local.abstract_local_model import AbstractLocalModel
    from autogluon.timeseries.models.registry import ModelRegistry
    from autogluon.timeseries.utils.datetime import (
        get_lags_for_frequency,
        get_time_features_for_frequency,
    )

    # The detector passes only context_length points: lags beyond it would be features the
    # model saw in training and never at inference.
    lags = [lag for lag in get_lags_for_frequency(freq) if lag < context_length]
    date_features = [
        f
        for f in get_time_features_for_frequency(freq)
        if f.__name__ not in _LONG_DATE_FEATURES
        and (f.__name__ != "day_of_week" or span >= pd.Timedelta(days=14))
    ]
    hp: dict[str, dict[str, Any]] = {}
    for m in models:
        cls = ModelRegistry.get_model_class(m)
        if m in ("DirectTabular", "RecursiveTabular", "PerStepTabular"):
            hp[m] = {"lags": lags, "date_features": date_features}
            if m == "RecursiveTabular":
                hp[m]["differences"] = []
        elif issubclass(cls, AbstractLocalModel):
            # One process per core by default: contention in the detector, not speed.
            hp[m] = {"n_jobs": 1}
        else:
            hp[m] = {}
    return hp


# --- backtest ---------------------------------------------------------------------------------


@dataclass
class Backtest:
    """Forecasts aligned with each series' points (NaN where not forecast)."""

    mean: dict[str, np.ndarray]
    quantiles: dict[str, dict[float, np.ndarray]]
    outlier: dict[str, np.ndarray] = field(default_factory=dict)
    alarm: dict[str, np.ndarray] = field(default_factory=dict)
    n_windows: int = 0
    predict_seconds: float = 0.0


def _windows(series: list[Series], prediction_length: int, max_windows: int) -> list[int]:
    k_max = max(math.ceil((s.n - s.start) / prediction_length) for s in series)
    if k_max <= max_windows:
        return list(range(k_max))
    return sorted({round(x) for x in np.linspace(0, k_max - 1, max_windows)})


def backtest(
    model: ForecastModel,
    series: list[Series],
    prediction_length: int,
    context_length: int,
    *,
    hide_labels: bool,
    calibration: Calibration | None = None,
    policy: AlarmPolicy | None = None,
    max_windows: int = MAX_BACKTEST_WINDOWS,
    on_window: Callable[[], None] | None = None,
) -> Backtest:
    """Rolling-origin forecasts over every series' holdout, all series batched per window.

    ``hide_labels``: labelled points are NaN in the context (clean-accuracy pass). With a
    ``calibration``, each forecast point is scored as the detector scores it and outliers are
    replaced by the forecast median in the context of later windows (the detector's replay).
    """
    levels = [float(q) for q in model.metadata["quantile_levels"]]
    ctx = {}
    for s in series:
        v = s.y.copy()
        if hide_labels:
            v[s.label] = np.nan
        else:
            # Before the holdout the detector would have run with its own flags; the masked
            # training target is the closest stand-in for that history.
            v[: s.start][s.label[: s.start]] = np.nan
        ctx[s.item_id] = v
    bt = Backtest(
        mean={s.item_id: np.full(s.n, np.nan) for s in series},
        quantiles={s.item_id: {q: np.full(s.n, np.nan) for q in levels} for s in series},
    )
    states = {s.item_id: AlarmState() for s in series}
    if calibration is not None:
        bt.outlier = {s.item_id: np.zeros(s.n, dtype=bool) for s in series}
        bt.alarm = {s.item_id: np.zeros(s.n, dtype=bool) for s in series}
    policy = policy or AlarmPolicy()
    lo_q, mid_q = (calibration.lower_quantile, 0.5) if calibration else (0.0, 0.5)
    hi_q = calibration.upper_quantile if calibration else 1.0
    windows = _windows(series, prediction_length, max_windows)
    for k in windows:
        parts, positions = [], {}
        for s in series:
            pos = s.start + k * prediction_length
            if pos >= s.n:
                continue
            lo = max(0, pos - context_length)
            positions[s.item_id] = pos
            parts.append(
                pd.DataFrame(
                    {
                        "item_id": s.item_id,
                        "timestamp": s.timestamps[lo:pos],
                        "target": ctx[s.item_id][lo:pos],
                    }
                )
            )
        if not parts:
            continue
        t0 = time.perf_counter()
        try:
            fc = model.forecast(pd.concat(parts, ignore_index=True))
        except Exception as e:  # never register a predictor that cannot predict
            raise ModelError(f"the fitted predictor failed to predict: {e}") from None
        bt.predict_seconds += time.perf_counter() - t0
        bt.n_windows += 1
        for item, block in fc.groupby("item_id", sort=False):
            item = str(item)
            pos = positions[item]
            s_n = len(bt.mean[item])
            m = min(prediction_length, s_n - pos, len(block))
            bt.mean[item][pos : pos + m] = block["mean"].to_numpy()[:m]
            for q in levels:
                bt.quantiles[item][q][pos : pos + m] = block[str(q)].to_numpy()[:m]
            if calibration is None:
                continue
            y = next(s.y for s in series if s.item_id == item)
            med = bt.quantiles[item][mid_q]
            for p in range(pos, pos + m):
                if not math.isfinite(y[p]):
                    continue
                ps = score_point(
                    float(y[p]),
                    float(med[p]),
                    float(bt.quantiles[item][lo_q][p]),
                    float(bt.quantiles[item][hi_q][p]),
                    calibration,
                )
                bt.outlier[item][p] = ps.outlier
                bt.alarm[item][p] = states[item].step(ps.outlier, policy)
                if ps.outlier:
                    # The detector keeps its context clean the same way.
                    ctx[item][p] = med[p]
        if on_window is not None:
            on_window()
    if bt.n_windows == 0:
        raise ModelError("the holdout produced no forecast windows")
    return bt


@dataclass
class Evaluation:
    metrics: dict[str, float]
    calibration: Calibration
    clean: Backtest
    replay: ReplayResult | None


def evaluate(
    model: ForecastModel,
    series: list[Series],
    settings: Settings,
    reporter: Reporter,
) -> Evaluation:
    pl, cl = settings.prediction_length, settings.context_length
    levels = sorted(float(q) for q in settings.quantile_levels)
    lo_q, hi_q = levels[0], levels[-1]
    n_win = len(_windows(series, pl, MAX_BACKTEST_WINDOWS))
    with reporter.phase("backtest on the holdout (clean context)", total=n_win):
        clean = backtest(model, series, pl, cl, hide_labels=True, on_window=reporter.advance)
    # Forecast accuracy on clean points: unlabelled, observed, forecast.
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

    # Calibration and replay run the holdout through the detector's own engine (block-aligned
    # forecasts, per-series adaptation, context cleaning, regime acceptance, alarm hygiene), so
    # the threshold is fitted to, and the precision/recall measured on, what runs live.
    rseries = _replay_series(series)
    # The model has no calibration yet (this pass computes it): the engine reads the interval
    # of the quantiles the calibration will use, and replay never fires while collecting.
    engine_model = Forecaster(
        model, name="candidate", version="candidate", calibration=Calibration(lo_q, hi_q)
    )
    engine_model.enable_fast_path()  # the detector's path, and a faster calibration
    policy = AlarmPolicy(settings.alarm_min_consecutive, settings.alarm_cooldown)
    n_blocks = _n_blocks(series, pl)
    with reporter.phase("calibrate: clean holdout through the detector's engine", total=n_blocks):
        cal_run = run_replay(
            engine_model, rseries, None, policy, settings.regime_accept_after,
            hide_labels=True, on_block=reporter.advance,
        )  # fmt: skip
    devs = np.concatenate([cal_run.deviation[r.key][cal_run.scored[r.key]] for r in rseries])
    if not len(devs):
        raise ModelError("no clean holdout points to evaluate and calibrate on")
    calibration = calibrate(devs.tolist(), settings.target_false_alarm_rate, lo_q, hi_q)
    y_all = np.concatenate(actual_all)
    metrics = {
        "mase": float(np.mean(ratios)) if ratios else float("nan"),
        "wql": wql(y_all, {q: np.concatenate(v) for q, v in q_all.items()}),
        "coverage": inside / total,
        "threshold": calibration.threshold,
        "calibration_points": float(len(devs)),
        "clean_false_alarm_rate": float(np.mean(devs >= calibration.threshold)),
        "backtest_windows": float(clean.n_windows),
        "predict_seconds_per_window": clean.predict_seconds / max(clean.n_windows, 1),
    }
    replay = None
    n_labels = sum(int(s.label[s.start :].sum()) for s in series)
    metrics["holdout_labelled_points"] = float(n_labels)
    if n_labels:
        with reporter.phase("replay the holdout through the detector's engine", total=n_blocks):
            replay = run_replay(
                engine_model, rseries, calibration, policy, settings.regime_accept_after,
                on_block=reporter.advance,
            )  # fmt: skip
        preds, labels = [], []
        events = caught = 0
        for s in series:
            scored = replay.scored[s.item_id]
            preds.extend(replay.alarm[s.item_id][scored].tolist())
            labels.extend(s.label[scored].tolist())
            for lo, hi in _segments(s.label & scored):
                events += 1
                caught += bool(replay.alarm[s.item_id][lo:hi].any())
        c = confusion(preds, labels)
        # Point-wise recall undercounts drifts and level shifts (the forecast adapts after
        # their first points); an anomaly event counts as caught when any of its points alarms.
        metrics.update(
            labelled_events=float(events), event_recall=caught / events if events else 0.0
        )
        metrics.update(
            precision=c.precision,
            recall=c.recall,
            f1=c.f1,
            replay_tp=float(c.tp),
            replay_fp=float(c.fp),
            replay_fn=float(c.fn),
        )
    return Evaluation(metrics, calibration, clean, replay)


def _replay_series(series: list[Series]) -> list[ReplaySeries]:
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


def _n_blocks(series: list[Series], prediction_length: int) -> int:
    return max(math.ceil((s.n - s.start) / prediction_length) for s in series) + 1


def _segments(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True values."""
    m = np.r_[False, mask, False].astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


# --- plot -------------------------------------------------------------------------------------


def plot_forecasts(
    series: list[Series], ev: Evaluation, path: Path, max_series: int = 4, max_points: int = 360
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bt = ev.clean
    cal = ev.calibration
    # Series with labelled anomalies in the holdout are the interesting ones to look at.
    ranked = sorted(series, key=lambda s: -int(s.label[s.start :].sum()))[:max_series]
    fig, axes = plt.subplots(len(ranked), 1, figsize=(12, 2.8 * len(ranked)), squeeze=False)
    for ax, s in zip(axes[:, 0], ranked, strict=True):
        lo = max(s.start - 60, s.n - max_points)
        t = s.timestamps[lo:]
        qs = bt.quantiles[s.item_id]
        ax.plot(t, s.y[lo:], color="black", lw=0.8, label="actual")
        ax.plot(t, qs[0.5][lo:], color="tab:blue", lw=1.0, label="forecast median")
        ax.fill_between(
            t,
            qs[cal.lower_quantile][lo:],
            qs[cal.upper_quantile][lo:],
            color="tab:blue",
            alpha=0.2,
            label=f"{cal.lower_quantile:g}-{cal.upper_quantile:g} interval",
        )
        lab = s.label[lo:]
        if lab.any():
            ax.scatter(t[lab], s.y[lo:][lab], color="red", s=14, zorder=3, label="labelled anomaly")
        if ev.replay is not None:
            al = ev.replay.alarm[s.item_id][lo:]
            if al.any():
                ax.scatter(
                    t[al],
                    s.y[lo:][al],
                    marker="x",
                    color="darkorange",
                    s=30,
                    zorder=4,
                    label="flagged",
                )
        ax.axvline(s.timestamps[s.start], color="grey", ls="--", lw=0.8)
        ax.set_title(s.item_id, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# --- the whole thing --------------------------------------------------------------------------


@dataclass
class TrainResult:
    run_id: str
    version: str
    model_uri: str
    metrics: dict[str, float]
    params: dict[str, Any]
    calibration: Calibration
    best_model: str
    leaderboard: pd.DataFrame
    train_seconds: float
    dropped_series: list[str]
    promotion: Any = None  # registry.PromotionDecision when --promote was asked
    promotion_error: str | None = None


def fit_predictor(
    train_df: pd.DataFrame,
    settings: Settings,
    models: list[str],
    freq: str,
    path: Path,
    time_limit: int,
) -> Any:
    from autogluon.timeseries import TimeSeriesDataFrame, TimeSeriesPredictor

    tsdf = TimeSeriesDataFrame(train_df.set_index(["item_id", "timestamp"]))
    span = train_df["timestamp"].max() - train_df["timestamp"].min()
    predictor = TimeSeriesPredictor(
        prediction_length=settings.prediction_length,
        freq=freq,
        target="target",
        eval_metric="WQL",
        quantile_levels=sorted(float(q) for q in settings.quantile_levels),
        path=str(path),
        verbosity=1,
        cache_predictions=False,
    )
    predictor.fit(
        tsdf,
        hyperparameters=hyperparameters(models, freq, settings.context_length, span),
        time_limit=time_limit,
        enable_ensemble=False,
        num_val_windows=1,
        random_seed=123,
    )
    names = predictor.model_names()
    if not names:
        raise ModelError(
            f"AutoGluon trained no model out of {models} within {time_limit} s",
            fix="raise --time-limit or choose cheaper models",
        )
    return predictor


def train(
    settings: Settings,
    data_path: Path,
    promote: bool = False,
    console: Any | None = None,
) -> TrainResult:
    import mlflow
    from mlflow.models import infer_signature

    from iot_mlops.lifecycle import registry

    rep = Reporter(console)
    data_path = Path(data_path)
    models = parse_models(settings.train_models)

    with rep.phase("read and regularise the data"):
        raw = read_parquet(data_path)
        data = prepare(raw)
        series, dropped = split_series(data, settings.prediction_length, settings.holdout_fraction)
        train_df = training_frame(series)
        masked = int(sum(s.label[: s.start].sum() for s in series))
        rep.note(
            f"{len(series)} series at {data.freq}, {len(raw)} rows, {data.n_gaps} gaps, "
            f"{masked} labelled anomaly points masked out of training"
        )
        for d in dropped:
            rep.note(f"[yellow]dropped (too short):[/] {d}")
    # Bad data is reported first (cheap to check); then MLflow, before minutes of fitting.
    registry.check_mlflow(settings)

    workdir = Path(tempfile.mkdtemp(prefix="iot-mlops-train-"))
    try:
        with rep.phase(f"fit AutoGluon ({', '.join(models)}, ≤{settings.train_time_limit_s} s)"):
            t0 = time.perf_counter()
            predictor = fit_predictor(
                train_df,
                settings,
                models,
                data.freq,
                workdir / "predictor",
                settings.train_time_limit_s,
            )
            train_seconds = time.perf_counter() - t0
            leaderboard = predictor.leaderboard()
            best = str(predictor.model_best)

        levels = sorted(float(q) for q in settings.quantile_levels)
        if 0.5 not in levels:
            raise ConfigError("quantile_levels must include 0.5 (the forecast median)")
        meta = ModelMetadata(
            freq=data.freq,
            prediction_length=settings.prediction_length,
            context_length=settings.context_length,
            quantile_levels=tuple(levels),
            best_model=best,
            models=tuple(models),
        )
        model = ForecastModel.from_predictor(predictor, meta.to_dict())
        model.predictor.persist()
        ev = evaluate(model, series, settings, rep)
        metrics = {**ev.metrics, "train_seconds": train_seconds}
        meta = meta.calibrated(
            ev.calibration,
            {k: v for k, v in metrics.items() if math.isfinite(v)},
            {"hash": data_hash(data_path), "n_series": len(series)},
        )
        metadata = meta.to_dict()
        model.metadata = metadata

        params = {
            "models": ",".join(models),
            "best_model": best,
            "freq": data.freq,
            "prediction_length": settings.prediction_length,
            "context_length": settings.context_length,
            "quantile_levels": ",".join(f"{q:g}" for q in levels),
            "time_limit_s": settings.train_time_limit_s,
            "holdout_fraction": settings.holdout_fraction,
            "target_false_alarm_rate": settings.target_false_alarm_rate,
            "n_series": len(series),
            "n_rows": len(raw),
            "n_gaps": data.n_gaps,
            "n_masked_train_points": masked,
            "n_dropped_series": len(dropped),
            "data_path": str(data_path),
            "data_hash": metadata["data"]["hash"],
            "ensemble": False,
        }

        with rep.phase("log the run and register the model"):
            mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
            mlflow.set_registry_uri(settings.mlflow_tracking_uri)
            mlflow.set_experiment(settings.experiment_name)
            meta_path = workdir / "metadata.json"
            meta_path.write_text(json.dumps(metadata, indent=2))
            lb_path = workdir / "leaderboard.csv"
            leaderboard.to_csv(lb_path, index=False)
            png = plot_forecasts(series, ev, workdir / "forecast_vs_actual.png")
            example = _input_example(series, settings.context_length)
            signature = infer_signature(example, model.forecast(example))
            with mlflow.start_run(run_name=f"train-{best}") as run:
                mlflow.log_params(params)
                mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
                mlflow.log_artifact(str(lb_path))
                mlflow.log_artifact(str(png))
                mlflow.log_dict(ev.calibration.to_dict(), "calibration.json")
                mlflow.set_tags({"best_model": best, "freq": data.freq})
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(pyfunc.__file__),
                    artifacts={
                        PREDICTOR_ARTIFACT: str(predictor.path),
                        METADATA_ARTIFACT: str(meta_path),
                    },
                    signature=signature,
                    input_example=example,
                    # Explicit: inferring requirements would load the model in a subprocess.
                    pip_requirements=_requirements(),
                    metadata={
                        "iot_mlops": {
                            k: metadata[k]
                            for k in (
                                "freq",
                                "prediction_length",
                                "context_length",
                                "quantile_levels",
                                "calibration",
                                "best_model",
                            )
                        }
                    },
                )
                mv = mlflow.register_model(info.model_uri, settings.model_name)
            version = str(mv.version)
            tags = {
                f"{registry.METRIC_TAG_PREFIX}{k}": f"{metrics[k]:.6g}"
                for k in registry.VERSION_METRICS
                if k in metrics and math.isfinite(metrics[k])
            }
            tags.update(best_model=best, freq=data.freq, data_hash=params["data_hash"])
            registry.set_version_tags(settings, version, tags)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    result = TrainResult(
        run_id=run.info.run_id,
        version=version,
        model_uri=f"models:/{settings.model_name}/{version}",
        metrics=metrics,
        params=params,
        calibration=ev.calibration,
        best_model=best,
        leaderboard=leaderboard,
        train_seconds=train_seconds,
        dropped_series=dropped,
    )
    if promote:
        try:
            result.promotion = registry.promote(settings, version)
        except registry.PromotionRefused as e:
            result.promotion_error = str(e)
    return result


def _input_example(series: list[Series], context_length: int) -> pd.DataFrame:
    """Two real contexts (tails of the fit part): what the detector sends."""
    n = min(context_length, 64)
    parts = []
    for s in series[:2]:
        lo = max(0, s.start - n)
        parts.append(
            pd.DataFrame(
                {
                    "item_id": s.item_id,
                    "timestamp": s.timestamps[lo : s.start],
                    "target": np.nan_to_num(
                        s.y[lo : s.start], nan=float(np.nanmedian(s.y[: s.start]))
                    ),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _requirements() -> list[str]:
    from importlib.metadata import version

    reqs = []
    for pkg in ("autogluon.timeseries", "mlflow", "pandas", "numpy"):
        with contextlib.suppress(Exception):
            reqs.append(f"{pkg}=={version(pkg)}")
    return reqs
