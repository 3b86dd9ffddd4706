"""Re-score a kept evaluation offline with variants of the scoring rules (ablations).

``iot-mlops evaluate DATA ... --out OUT --keep-topics`` keeps the scores topic, which holds
every scored reading's forecast (median and interval). This script reads it back and replays
each file's readings through the detector's own per-series state (``SeriesState.score``, the
channels, the episodes) and device aggregation (``DeviceState``) with those recorded
forecasts, under several rule variants, and scores each variant with ``evaluate``'s own scorer
(NAB-style profiles on onsets, SKAB's per-row F1/FAR/MAR on in-episode rows, the changepoint
score on opens and closes).

It approximates re-running ``evaluate``: the forecasts are the recorded ones, so a variant's
effect on later forecasts (an outlier enters the model's context as the forecast median) is
ignored. Good for ranking rule changes in seconds; confirm a winner with a full ``evaluate``.

Usage (the same data options as the evaluation)::

    .venv/bin/python bench/rescore.py DATA_DIR OUT_DIR [--labels L] [--train-rows N]
        [--label-column C] [--ignore-column C ...] [--sep S] [--variant NAME ...]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from iot_mlops.config import Settings
from iot_mlops.evaluation.datasets import ReadOptions, corpus_labels, load_corpus
from iot_mlops.evaluation.grid import GRID_STEP_NS
from iot_mlops.evaluation.score_report import score_corpus
from iot_mlops.evaluation.stream import message_order, read_topic
from iot_mlops.evaluation.windows import load_labels
from iot_mlops.scoring.calibrate import Calibration
from iot_mlops.scoring.channels import ChannelConfig
from iot_mlops.scoring.device import DeviceState
from iot_mlops.scoring.episodes import EpisodePolicy
from iot_mlops.scoring.rules import Rules, engine_options
from iot_mlops.scoring.state import Forecast, SeriesState

_SHIPPED = engine_options(Settings())  # the settings' defaults: what the detector runs


def _episodes(**kw: float) -> EpisodePolicy:
    return replace(_SHIPPED["episodes"], **kw)


def _device(**kw: float) -> EpisodePolicy:
    return replace(_SHIPPED["device_episodes"], **kw)


@dataclass(frozen=True)
class Variant:
    channels: ChannelConfig = field(default_factory=ChannelConfig)
    episodes: EpisodePolicy = field(default_factory=_episodes)
    device_episodes: EpisodePolicy | None = field(default_factory=_device)
    target_rate: float | None = None  # None: the model's calibrated target_false_alarm_rate


BASE = Variant()
VARIANTS = {
    "default": BASE,
    "closed at 30 readings (before 2026-12-02)": Variant(
        episodes=_episodes(max_readings=30, departure_hold=0.75),
        device_episodes=_device(max_readings=30, departure_hold=0.75),
    ),
    **{
        f"departure at rate^{h}, at most {n or 'any'} readings": Variant(
            episodes=_episodes(departure_hold=h, max_readings=n),
            device_episodes=_device(departure_hold=h, max_readings=n),
        )
        for h in (0.75, 1.0, 2.0, 3.0)
        for n in (0, 100, 300)
    },
    "no seasonal": replace(
        BASE, channels=ChannelConfig(channels=("residual", "shift", "level", "stuck"))
    ),
    "seasonal over 32": replace(BASE, channels=ChannelConfig(season_window=32)),
    "seasonal over 64": replace(BASE, channels=ChannelConfig(season_window=64)),
    "residual only": replace(BASE, channels=ChannelConfig(channels=("residual",))),
    "residual + stuck": replace(BASE, channels=ChannelConfig(channels=("residual", "stuck"))),
    "no level": replace(BASE, channels=ChannelConfig(channels=("residual", "shift", "stuck"))),
    "no shift": replace(BASE, channels=ChannelConfig(channels=("residual", "level", "stuck"))),
    "stuck silent on repeating series (before 2026-12-05)": replace(
        BASE, channels=ChannelConfig(stuck_clustering=0, stuck_max_repeat_rate=0.05)
    ),
    "stuck runs x2": replace(BASE, channels=ChannelConfig(stuck_clustering=2)),
    "stuck runs x5": replace(BASE, channels=ChannelConfig(stuck_clustering=5)),
    "tails not widened (conservative 0)": replace(BASE, channels=ChannelConfig(conservative=0)),
    "tails widened as before (conservative 1)": replace(
        BASE, channels=ChannelConfig(conservative=1)
    ),
    "tails widened more (conservative 2)": replace(BASE, channels=ChannelConfig(conservative=2)),
    "close after 30": replace(BASE, episodes=_episodes(close_after=30)),
    "hold 0.5 (longer episodes)": replace(BASE, episodes=_episodes(hold=0.5)),
    "no relearning": replace(BASE, episodes=_episodes(relearn_after=0)),
    "device episodes as series (close after 10)": replace(BASE, device_episodes=None),
    "device episodes never renewed (before 2026-12-04)": replace(
        BASE, device_episodes=_device(renew_after=0)
    ),
    "device episodes renewed after 60": replace(BASE, device_episodes=_device(renew_after=60)),
}


def _custom(name: str) -> Variant:
    """``x:dh=2,max=300,dclose=10,rate=0.001``: departure hold, cap, device close, target
    false-alarm rate (the decision threshold)."""
    kv = dict(p.split("=") for p in name.removeprefix("x:").split(",") if p)
    dh = float(kv.get("dh", _SHIPPED["episodes"].departure_hold))
    cap = int(kv.get("max", _SHIPPED["episodes"].max_readings))
    return Variant(
        episodes=_episodes(departure_hold=dh, max_readings=cap),
        device_episodes=_device(
            departure_hold=dh,
            max_readings=cap,
            close_after=int(kv.get("dclose", _SHIPPED["device_episodes"].close_after)),
        ),
        target_rate=float(kv["rate"]) if "rate" in kv else None,
    )


def recorded(data_dir: Path, out_dir: Path, opts: ReadOptions, settings: Settings) -> tuple:
    """The corpus, each file's recorded (outcome, median, lower, upper) per row and metric, and
    the model's calibration."""
    import mlflow

    summary = json.loads((out_dir / "scores.json").read_text())["evaluation"]
    topics = [t for t in summary.get("topics", []) if t.endswith(".scores")]
    if not topics:
        sys.exit(f"{out_dir}/scores.json names no kept scores topic: run evaluate --keep-topics")
    series = load_corpus(data_dir, opts)
    f_of, r_of, c_of = message_order(series)  # one partition: offset k is the k-th message
    rec = [
        {"outcome": np.full((x.n, x.m), "", dtype=object), "fc": np.full((x.n, x.m, 3), np.nan)}
        for x in series
    ]
    for m in read_topic(settings, topics[0]):
        r = orjson.loads(m.value())
        k = r["source_offset"]
        f, row, col = int(f_of[k]), int(r_of[k]), int(c_of[k])
        rec[f]["outcome"][row, col] = r["outcome"]
        if r["outcome"] == "scored":
            rec[f]["fc"][row, col] = (r["predicted_value"], r["lower"], r["upper"])
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    cal = mlflow.artifacts.load_dict(f"runs:/{summary['training_run_id']}/calibration.json")
    return series, rec, Calibration.from_dict(cal)


def replay_file(x: Any, rec: dict, rules: Rules) -> pd.DataFrame:
    """One file through fresh series states (and a device state when it has several
    metrics): per row, the decision evaluate would have written."""
    step_ms = GRID_STEP_NS // 1_000_000
    states = [SeriesState(step_ms, 8, f"{x.device_id}/{m}", x.device_id) for m in x.metrics]
    device = DeviceState(x.device_id)
    n, grid_ms = x.n, x.synthetic_ms()
    out = {k: np.zeros(n, dtype=bool) for k in ("is_anomaly", "in_episode", "closed")}
    score = np.zeros(n)
    for i in range(n):
        g = int(grid_ms[i])
        for j, st in enumerate(states):
            oc, v = rec["outcome"][i, j], float(x.values[i, j])
            if oc == "warming_up":
                st.warm(g, v, rules)
            elif oc == "scored":
                med, lo, hi = rec["fc"][i, j]
                st.forecast = Forecast(g, step_ms, [med], [lo], [hi], "recorded")
                sc = st.score(g, v, rules)
                d = (
                    device.observe(x.metrics[j], g, sc.log_p, rules, sc.hold_log_p)
                    if x.m > 1
                    else None
                )
                src = d if d is not None else (sc if x.m == 1 else None)
                if src is not None:
                    k = i if d is None else int(np.searchsorted(grid_ms, d.t_ms))
                    out["is_anomaly"][k] |= src.onset
                    out["in_episode"][k] = src.in_episode
                    out["closed"][k] |= src.closed
                    score[k] = max(score[k], src.score)
    if x.m > 1:  # carry the device's state over rows it did not decide
        last = False
        for i in range(n):
            if out["in_episode"][i] or out["is_anomaly"][i] or out["closed"][i]:
                last = out["in_episode"][i]
            else:
                out["in_episode"][i] = last
    return pd.DataFrame(
        {"timestamp": x.ts_ns.view("datetime64[ns]"), **out, "anomaly_score": score}
    )


def row(name: str, rep: Any) -> str:
    sc, ev, o = rep.scores, rep.event, rep.outliers
    cp = rep.changepoint_scores
    fmt = lambda v: "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"  # noqa: E731
    return (
        f"| {name} | {fmt(sc['standard'])} | {fmt(sc['reward_low_fp'])} | "
        f"{fmt(sc['reward_low_fn'])} | {ev.precision:.3f} / {ev.recall:.3f} | "
        f"{o.f1:.3f} / {100 * o.far:.1f} % | "
        f"{fmt(cp.get('standard'))} | {sum(f.flagged for f in rep.files.values())} | "
        f"{fmt(rep.best_thresholds['standard'].score)} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--labels", type=Path)
    ap.add_argument("--train-rows", type=int)
    ap.add_argument("--probation", type=float, default=0.15)
    ap.add_argument("--label-column")
    ap.add_argument("--ignore-column", action="append", default=[])
    ap.add_argument("--sep")
    ap.add_argument("--variant", action="append", help="a name below, or 'x:dh=2,max=300,...'")
    a = ap.parse_args()
    opts = ReadOptions(
        probation=a.probation, train_rows=a.train_rows, sep=a.sep,
        label_column=a.label_column, ignore_columns=tuple(a.ignore_column),
    )  # fmt: skip
    series, rec, cal = recorded(a.data_dir, a.out_dir, opts, Settings())
    labels = corpus_labels(series, load_labels(a.labels) if a.labels else {})
    print(f"{sum(x.n for x in series):,} rows; calibrated threshold {cal.threshold:.3f}")
    print(
        "| variant | standard | low FP | low FN | event P / R | SKAB F1 / FAR | changepoint "
        "| onsets | standard at the best threshold |\n|---|---:|---:|---:|---|---|---:|---:|---:|"
    )
    for name in a.variant or list(VARIANTS):
        v = VARIANTS[name] if name in VARIANTS else _custom(name)
        c = cal if v.target_rate is None else replace(cal, target_false_alarm_rate=v.target_rate)
        rules = Rules(c, v.channels, v.episodes, device_episodes=v.device_episodes)
        frames = {x.rel: replay_file(x, r, rules) for x, r in zip(series, rec, strict=True)}
        rep = score_corpus(frames, labels, a.probation, train_rows=a.train_rows)
        print(row(name, rep), flush=True)


if __name__ == "__main__":
    main()
