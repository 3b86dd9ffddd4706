"""Re-score a kept evaluation offline with variants of the scoring rules (ablations).

``iot-mlops evaluate DATA --labels LABELS --out OUT --keep-topics`` keeps the scores topic,
which holds every scored reading's forecast (median and interval). This script reads it back
and replays each file's readings through the detector's own per-series state
(``SeriesState.score``) with those recorded forecasts, under several rule variants, and scores
each variant with the same NAB-style scorer as ``evaluate``.

It is an approximation of re-running ``evaluate``: the forecasts are the recorded ones, so
the effect of a variant on later forecasts (a flagged value enters the model's context as the
forecast median) is ignored. Good for ranking rule changes in seconds; confirm a winner with a
full ``evaluate``.

Usage::

    .venv/bin/python bench/rescore.py DATA_DIR LABELS.json OUT_DIR [--variant NAME ...]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from iot_mlops.config import Settings
from iot_mlops.evaluation.pipeline import GRID_STEP_NS, load_corpus, read_topic, stream_order
from iot_mlops.evaluation.scores import load_labels, score_corpus
from iot_mlops.scoring.alarms import AlarmPolicy
from iot_mlops.scoring.calibrate import Calibration
from iot_mlops.scoring.channels import TailThreshold
from iot_mlops.scoring.state import Forecast, SeriesState


@dataclass(frozen=True)
class Variant:
    tail: bool = True  # per-series tail threshold (scoring.channels.TailThreshold)
    threshold_factor: float = 1.0  # times the calibrated threshold
    cooldown: int = 0  # AlarmPolicy.cooldown
    accept_after: int = 30  # regime acceptance (settings.regime_accept_after)


VARIANTS = {
    "calibrated threshold only (no tail)": Variant(tail=False),
    "global threshold x1.5": Variant(tail=False, threshold_factor=1.5),
    "global threshold x2": Variant(tail=False, threshold_factor=2.0),
    "cooldown 50 (no tail)": Variant(tail=False, cooldown=50),
    "per-series tail threshold (kept)": Variant(),
    "tail + cooldown 20": Variant(cooldown=20),
    "tail, no regime acceptance": Variant(accept_after=0),
}


def recorded(
    data_dir: Path, out_dir: Path, settings: Settings
) -> tuple[list, list, Calibration, float]:
    """The corpus, each file's recorded rows (outcome, median, lower, upper), the calibration
    and the probation share."""
    import mlflow

    summary = json.loads((out_dir / "scores.json").read_text())["evaluation"]
    topics = [t for t in summary.get("topics", []) if t.endswith(".scores")]
    if not topics:
        sys.exit(f"{out_dir}/scores.json names no kept scores topic: run evaluate --keep-topics")
    series = load_corpus(data_dir, summary["probation"])
    fidx, rows = stream_order(series)  # one partition: offset k is the k-th row produced
    per_file = [
        {
            "outcome": np.full(x.n, "", dtype=object),
            "fc": np.full((x.n, 3), np.nan),
        }
        for x in series
    ]
    for m in read_topic(settings, topics[0]):
        r = orjson.loads(m.value())
        f, row = int(fidx[r["source_offset"]]), int(rows[r["source_offset"]])
        per_file[f]["outcome"][row] = r["outcome"]
        if r["outcome"] == "scored":
            per_file[f]["fc"][row] = (r["predicted_value"], r["lower"], r["upper"])
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    cal = mlflow.artifacts.load_dict(f"runs:/{summary['training_run_id']}/calibration.json")
    return series, per_file, Calibration.from_dict(cal), float(summary["probation"])


def flags(series: list, per_file: list, cal: Calibration, v: Variant) -> list[np.ndarray]:
    cal = replace(cal, threshold=cal.threshold * v.threshold_factor)
    policy = AlarmPolicy(cooldown=v.cooldown)
    step_ms = GRID_STEP_NS // 1_000_000
    out = []
    for x, d in zip(series, per_file, strict=True):
        st = SeriesState(step_ms, context_length=8)
        if not v.tail:
            st.tail = TailThreshold(min_points=math.inf)  # type: ignore[arg-type]
        flag = np.zeros(x.n, dtype=bool)
        grid_ms = x.synthetic_ms()
        for i in range(x.n):
            oc, value = d["outcome"][i], float(x.values[i])
            if oc == "warming_up":
                st.warm(int(grid_ms[i]), value)
            elif oc == "scored":
                med, lo, hi = d["fc"][i]
                g = int(grid_ms[i])
                st.forecast = Forecast(g, step_ms, [med], [lo], [hi], "recorded")
                flag[i] = st.score(g, value, cal, policy, v.accept_after).alarm
        out.append(flag)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("labels", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    a = ap.parse_args()
    series, per_file, cal, probation = recorded(a.data_dir, a.out_dir, Settings())
    labels = load_labels(a.labels)
    print(f"calibrated threshold {cal.threshold:.3f}; {sum(x.n for x in series):,} rows")
    print("| variant | standard | reward low FP | reward low FN | event P / R / F1 | point F1 |")
    print("|---|---:|---:|---:|---|---:|")
    for name in a.variant or list(VARIANTS):
        fl = flags(series, per_file, cal, VARIANTS[name])
        frames = {
            x.rel: pd.DataFrame({"timestamp": x.ts_ns.view("datetime64[ns]"), "is_anomaly": f})
            for x, f in zip(series, fl, strict=True)
        }
        rep = score_corpus(frames, labels, probation)
        sc, ev = rep.scores, rep.event
        print(
            f"| {name} | {sc['standard']:.1f} | {sc['reward_low_fp']:.1f} | "
            f"{sc['reward_low_fn']:.1f} | {ev.precision:.3f} / {ev.recall:.3f} / {ev.f1:.3f} | "
            f"{rep.point.f1:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
