"""``iot-mlops evaluate``: score the real detector on labelled CSV files, causally, end to end.

Protocol (like a live deployment):

1. Every ``*.csv`` under DATA_DIR (any depth) is one device: a timestamp column and one column
   per metric (``datasets``: separator, timestamp, label and ignored columns); a
   ``timestamp,value`` file is one series. Labels come from LABELS.json and/or a 0/1 label
   column of the files.
2. Only the first rows of each file (``--train-rows N``, or the ``--probation`` share; the rows
   the scorer ignores) are used to train, and labels are never used for training or
   thresholds: one AutoGluon model for every metric of every file, registered as
   ``<model_name>-evaluation`` (never the production model) and promoted to the settings'
   alias there, so the detector loads it through the normal registry lifecycle.
3. Every reading of every file is produced to fresh Kafka topics (``stream``: key = the
   device, a row's metrics consecutively) and scored by the real ``Detector`` running in this
   process with a scores topic, until the group has committed every input offset.
4. The scores topic is read back (read_committed) and mapped by source partition/offset to
   (file, row, metric) (``results``); the result files, ``scores.json`` and an MLflow
   evaluation run are written (``report``), with every score of ``score_report``.

Series whose training rows are too short or too gappy for AutoGluon are left out of training
(they are still streamed and scored by the one global model). The common time grid is
described in ``grid``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iot_mlops.config import Settings
from iot_mlops.errors import ConfigError
from iot_mlops.evaluation.datasets import ReadOptions, SeriesData, corpus_labels, load_corpus
from iot_mlops.evaluation.grid import (
    DEVICE_TYPE,
    GRID_EPOCH_NS,
    GRID_FREQ,
    GRID_STEP_NS,
    estimate_grid,
)
from iot_mlops.evaluation.report import log_evaluation, score_frames, write_results, write_scores
from iot_mlops.evaluation.results import FileResult, collect_scores, outcome_counts
from iot_mlops.evaluation.score_report import ScoreReport, score_corpus
from iot_mlops.evaluation.scores import DEFAULT_PROBATION, load_labels
from iot_mlops.evaluation.stream import (
    Topics,
    delete_topics,
    produce,
    read_topic,
    run_detector,
    stream_order,
)
from iot_mlops.evaluation.windows import Window

__all__ = [
    "GRID_STEP_NS",
    "EvaluationResult",
    "ReadOptions",
    "estimate_grid",
    "evaluate",
    "load_corpus",
    "read_topic",
    "stream_order",
]

DEFAULT_TIME_LIMIT_S = 120
# One partition: the detector then reads every file's rows in synthetic-time order, so each
# model call serves all files. With several partitions the consumer gets one partition's fetch
# at a time and the same corpus needs several times more model calls (measured: 2,214 calls for
# the 400k-row corpus on 1 partition, 10,067 on 6). Scale-out is not what is measured here.
DEFAULT_PARTITIONS = 1
DEFAULT_BATCH = 5000
# Training (data.grid.regularise) refuses a series missing more than 25 % of its grid
# points; leave a margin.
MAX_TRAIN_GAP_FRACTION = 0.2
MAX_NOTES = 5  # series left out of training named on the console (all in scores.json)


@dataclass
class EvaluationResult:
    report: ScoreReport
    scores_path: Path
    summary: dict[str, Any]  # the "evaluation" block of scores.json
    run_id: str | None


@dataclass
class Inputs:
    series: list[SeriesData]
    labels: dict[str, list[Window]]
    train_df: pd.DataFrame
    left_out: list[str]

    @property
    def rows(self) -> int:
        return sum(x.n for x in self.series)

    @property
    def readings(self) -> int:
        return sum(x.n * x.m for x in self.series)


@dataclass
class Streamed:
    version: str
    run_id: str
    best_model: str
    results: list[FileResult]
    timing: dict[str, float] = field(default_factory=dict)
    detector: dict[str, float] = field(default_factory=dict)


def _series_frame(s: SeriesData, j: int, keep: np.ndarray) -> pd.DataFrame:
    g = s.grid[: s.probation_rows][keep]
    return pd.DataFrame(
        {
            "device_id": s.device_id,
            "device_type": DEVICE_TYPE,
            "metric_name": s.metrics[j],
            "metric_value": s.values[: s.probation_rows, j][keep],
            "timestamp": pd.to_datetime(GRID_EPOCH_NS + g * GRID_STEP_NS, utc=True),
            "is_anomaly": False,
        }
    )


def training_frame(series: list[SeriesData], min_points: int) -> tuple[pd.DataFrame, list[str]]:
    """The training rows of every metric on the synthetic grid, in the train schema; plus the
    series left out (too short or too gappy to fit)."""
    parts, left_out = [], []
    for s in series:
        for j, metric in enumerate(s.metrics):
            name = s.rel if s.single else f"{s.rel} [{metric}]"
            keep = s.train_mask(j)
            g = s.grid[: s.probation_rows][keep]
            n = len(g)
            span = int(g.max() - g.min() + 1) if n else 0
            if n < min_points:
                left_out.append(f"{name} ({n} usable training points, needs {min_points})")
            elif 1 - n / span > MAX_TRAIN_GAP_FRACTION:
                left_out.append(f"{name} (training rows miss {1 - n / span:.0%} of its steps)")
            else:
                parts.append(_series_frame(s, j, keep))
    if not parts:
        raise ConfigError(
            "no series has enough regular data in its training rows to train on "
            f"({'; '.join(left_out[:3])})",
            fix="use longer series, a larger --probation or more --train-rows",
        )
    return pd.concat(parts, ignore_index=True), left_out


def check_options(opts: ReadOptions, labels_path: Path | None) -> None:
    if opts.train_rows is None and not 0.0 < opts.probation < 1.0:
        raise ConfigError(f"--probation must be in (0, 1), got {opts.probation}")
    if opts.train_rows is not None and opts.train_rows < 1:
        raise ConfigError(f"--train-rows must be at least 1, got {opts.train_rows}")
    if labels_path is None and not opts.label_column:
        raise ConfigError(
            "no labels: give --labels LABELS.json, --label-column COLUMN, or both",
        )


def read_inputs(
    s: Settings,
    data_dir: Path,
    labels_path: Path | None,
    out_dir: Path,
    opts: ReadOptions,
    rep: Any,
) -> Inputs:
    """Step 1: the files, the labels and the training frame (bad data is cheap to report,
    before any service or minutes of fitting)."""
    from iot_mlops.data.grid import min_series_length
    from iot_mlops.training.fit import parse_models

    given = load_labels(labels_path) if labels_path is not None else {}
    series = load_corpus(data_dir, opts, out_dir)
    unknown = sorted(set(given) - {x.rel for x in series})
    if unknown:
        raise ConfigError(
            f"labels file {labels_path} names {len(unknown)} file(s) that are not under "
            f"{data_dir}: {', '.join(unknown[:5])}",
            fix="keys of LABELS.json are CSV paths relative to DATA_DIR",
        )
    labels = corpus_labels(series, given)
    parse_models(s.train_models)  # a bad --models fails now, not after streaming
    train_df, left_out = training_frame(
        series, min_series_length(s.prediction_length, s.holdout_fraction)
    )
    inputs = Inputs(series, labels, train_df, left_out)
    _note_inputs(inputs, rep)
    return inputs


def _note_inputs(inputs: Inputs, rep: Any) -> None:
    series = inputs.series
    n_bad = sum(int(np.isnan(x.values).sum()) for x in series)
    n_dev = sum(1 for x in series if not x.single)
    rep.note(
        f"{len(series)} files ({n_dev} multi-metric), {inputs.rows:,} rows, "
        f"{inputs.readings:,} readings"
        + (f", {n_bad} non-numeric values (streamed, dead-lettered)" if n_bad else "")
        + f"; labels for {len(inputs.labels)} files"
    )
    skipped = sorted({c for x in series for c in x.skipped_columns})
    if skipped:
        rep.note(f"[yellow]non-numeric columns left out:[/] {', '.join(skipped[:10])}")
    for x in inputs.left_out[:MAX_NOTES]:
        rep.note(f"[yellow]not trained on:[/] {x}")
    if len(inputs.left_out) > MAX_NOTES:
        more = len(inputs.left_out) - MAX_NOTES
        rep.note(f"[yellow]not trained on:[/] {more} more series (scores.json: not_trained_on)")


def detector_settings(s: Settings, topics: Topics, batch_max_messages: int) -> Settings:
    return s.with_overrides(
        input_topic=topics.input,
        anomalies_topic=topics.anomalies,
        dlq_topic=topics.dlq,
        scores_topic=topics.scores,
        consumer_group=topics.group,
        batch_max_messages=batch_max_messages,
        alias_poll_interval_s=2.0,
    )


def train_model(s: Settings, train_df: pd.DataFrame, console: Any) -> Any:
    """Step 3: train on the training rows only; register and promote under the evaluation
    name."""
    from iot_mlops.lifecycle.registry import promote
    from iot_mlops.training.pipeline import train

    workdir = Path(tempfile.mkdtemp(prefix="iot-mlops-evaluate-"))
    try:
        train_path = workdir / "training-rows.parquet"
        train_df.to_parquet(train_path, index=False)
        tr = train(s, train_path, promote=False, console=console)
        promote(s, tr.version, force=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return tr


def stream_and_score(
    s: Settings,
    ds: Settings,
    topics: Topics,
    inputs: Inputs,
    partitions: int,
    console: Any,
    rep: Any,
) -> Streamed:
    """Steps 2-5: produce every reading, train, run the real detector until every input
    offset is committed, and map its outputs back to (file, row, metric)."""
    t0 = time.perf_counter()
    where = produce(ds, topics.input, inputs.series, partitions, console)
    produce_seconds = time.perf_counter() - t0
    rep.note(f"produced {inputs.readings:,} readings to {topics.input} in {produce_seconds:.1f} s")
    t0 = time.perf_counter()
    tr = train_model(s, inputs.train_df, console)
    train_seconds = time.perf_counter() - t0
    rep.note(f"{s.model_name} version {tr.version} → alias {s.model_alias}")
    ends: dict[int, int] = dict.fromkeys(range(partitions), 0)
    for part, off in where:
        for p in np.unique(part).tolist():
            ends[p] = max(ends[p], int(off[part == p].max()) + 1)
    stream = run_detector(ds, ends, tr.version, console)
    sec = stream["stream_seconds"]
    rep.note(
        f"detector scored {inputs.readings:,} readings in {sec:.1f} s "
        f"({inputs.readings / max(sec, 1e-9):,.0f} readings/s)"
    )
    with rep.phase("collect the scores"):
        records = read_topic(ds, topics.scores, console)
        dead = read_topic(ds, topics.dlq, console)
        results = collect_scores(inputs.series, where, records, dead, tr.version)
    timing = {
        "produce_seconds": produce_seconds,
        "train_seconds": train_seconds,
        "stream_seconds": sec,
    }
    return Streamed(tr.version, tr.run_id, tr.best_model, results, timing, stream)


def summarise(
    s: Settings, inputs: Inputs, st: Streamed, opts: ReadOptions, extra: dict[str, Any]
) -> dict[str, Any]:
    """The "evaluation" block of scores.json."""
    sec = st.timing["stream_seconds"]
    return {
        "files": len(inputs.series),
        "rows": inputs.rows,
        "readings": inputs.readings,
        "model_name": s.model_name,
        "model_version": st.version,
        "training_run_id": st.run_id,
        "best_model": st.best_model,
        "models": s.train_models,
        "time_limit_s": s.train_time_limit_s,
        "probation": opts.probation,
        "train_rows": opts.train_rows,
        "grid_freq": GRID_FREQ,
        "training_rows": len(inputs.train_df),
        "not_trained_on": inputs.left_out,
        "outcomes": outcome_counts(st.results),
        **{k: round(v, 2) for k, v in st.timing.items()},
        "rows_per_second": round(inputs.rows / max(sec, 1e-9), 1),
        "readings_per_second": round(inputs.readings / max(sec, 1e-9), 1),
        "detector": {k: round(v, 3) for k, v in st.detector.items() if math.isfinite(v)},
        "device_decisions": sum(r.device_from_detector for r in st.results),
        "series_steps_s": {x.rel: round(x.step_ns / 1e9, 6) for x in inputs.series},
        "metrics": {x.rel: x.metrics for x in inputs.series if not x.single},
        **extra,
    }


def evaluate(
    settings: Settings,
    data_dir: Path,
    labels_path: Path | None,
    out_dir: Path,
    probation: float = DEFAULT_PROBATION,
    time_limit_s: int = DEFAULT_TIME_LIMIT_S,
    model_name: str | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    batch_max_messages: int = DEFAULT_BATCH,
    keep_topics: bool = False,
    console: Any | None = None,
    read: ReadOptions | None = None,
) -> EvaluationResult:
    """Train on the training rows, stream everything through the real detector, score it
    against the labels and log it (see the module docstring). ``read`` says how to read the
    files (its probation, when given, wins over ``probation``)."""
    from iot_mlops.kafka.topics import create_topics
    from iot_mlops.lifecycle.registry import check_mlflow
    from iot_mlops.progress import Reporter

    t_start = time.perf_counter()
    rep = Reporter(console)
    # MLflow's per-file download bars would drown the evaluation's own progress.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    opts = read or ReadOptions(probation=probation)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    labels_path = Path(labels_path) if labels_path is not None else None
    check_options(opts, labels_path)
    s = settings.with_overrides(
        model_name=model_name or f"{settings.model_name}-evaluation",
        train_time_limit_s=time_limit_s,
    )
    with rep.phase("read the CSV files and labels"):
        inputs = read_inputs(s, data_dir, labels_path, out_dir, opts, rep)
    check_mlflow(s)
    topics = Topics.fresh()
    create_topics(s, {t: partitions for t in topics.all()})
    try:
        ds = detector_settings(s, topics, batch_max_messages)
        st = stream_and_score(s, ds, topics, inputs, partitions, console, rep)
    finally:
        if not keep_topics:
            delete_topics(s, topics.all())
    with rep.phase("write the results and score them"):
        out_dir.mkdir(parents=True, exist_ok=True)
        write_results(out_dir, inputs.series, st.results)
        frames = score_frames(inputs.series, st.results)
        cps = {x.rel: x.ts_ns[x.changepoints] for x in inputs.series if x.changepoints is not None}
        report = score_corpus(
            frames, inputs.labels, opts.probation, train_rows=opts.train_rows, changepoints=cps
        )
    st.timing["total_seconds"] = time.perf_counter() - t_start
    extra = {"topics": topics.all() if keep_topics else []}
    summary = summarise(s, inputs, st, opts, extra)
    scores_path = write_scores(out_dir, report, summary)
    params = _params(s, data_dir, labels_path, inputs, opts, partitions, batch_max_messages)
    run_id = log_evaluation(s, scores_path, report=report, summary=summary, params=params)
    return EvaluationResult(report, scores_path, summary, run_id)


def _params(
    s: Settings,
    data_dir: Path,
    labels_path: Path | None,
    inputs: Inputs,
    opts: ReadOptions,
    partitions: int,
    batch_max_messages: int,
) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir),
        "labels": str(labels_path) if labels_path is not None else "",
        "label_column": opts.label_column or "",
        "ignore_columns": ",".join(opts.ignore_columns),
        "changepoint_column": opts.changepoint_column or "",
        "files": len(inputs.series),
        "rows": inputs.rows,
        "readings": inputs.readings,
        "probation": opts.probation,
        "train_rows": opts.train_rows if opts.train_rows is not None else "",
        "time_limit_s": s.train_time_limit_s,
        "models": s.train_models,
        "grid_freq": GRID_FREQ,
        "partitions": partitions,
        "batch_max_messages": batch_max_messages,
        "host_cpus": os.cpu_count() or 0,
    }
