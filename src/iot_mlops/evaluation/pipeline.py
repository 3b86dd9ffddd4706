"""``iot-mlops evaluate``: score the real detector on labelled CSV series, causally, end to end.

Protocol (like a live deployment):

1. Every ``*.csv`` under DATA_DIR (any depth) is one series with columns ``timestamp,value``.
   Rows are kept exactly as given (original text, original order); a value that is not a finite
   number is kept too and streamed as it is (the detector dead-letters it).
2. Only the first ``probation`` share of each file's rows (``floor(probation * rows)``, the rows
   the scorer ignores) is used to train, and labels are never used for training or thresholds:
   one AutoGluon model for all files, registered as ``<model_name>-evaluation`` (never the
   production model) and promoted to the settings' alias there, so the detector loads it
   through the normal registry lifecycle.
3. Every row of every file is produced to fresh Kafka topics (key = the file, so a file stays
   on one partition, in order) and scored by the real ``Detector`` running in this process
   with a scores topic, until the group has committed every input offset.
4. The scores topic is read back (read_committed) and mapped by source partition/offset to
   (file, row); the result files, ``scores.json`` and an MLflow evaluation run are written.

The common grid
---------------
The model needs one frequency, but files range from 1 s to 1 h and may be irregular. Each
series is mapped onto a synthetic regular grid at ``GRID_FREQ`` (1 minute):

* its own step is estimated from its probation rows (at least ``MIN_STEP_ROWS`` rows): the
  median positive difference of consecutive timestamps, then refined by least squares of the
  timestamps on their rounded step numbers over a doubling prefix (``t ≈ phase + k·step``), so
  sampling jitter does not turn a 0.3 % error of the median into a drift of many steps over a
  long series; the phase is fitted too, because the first reading itself may be jittered;
* each row's grid index is ``k = round((t - phase) / step)`` and its synthetic time is
  ``GRID_EPOCH + k * 1 min``.

So jittered sampling lands on its grid steps; dropped points and outages become gaps (NaN in
the model's context, which the detector fills); a repeated timestamp becomes a second reading
for the same grid step (a *duplicate*); a backward clock jump becomes readings for steps that
were already seen (*late*). The detector never scores duplicate or late readings twice: they
get ``anomaly_score`` 0 and ``is_anomaly`` false in the output, like rows the detector
dead-letters (a non-numeric value). Training uses the same rule: only probation rows whose grid
index is beyond every earlier one (what the detector itself feeds its context). Series whose
probation is too short or too gappy for AutoGluon are left out of training (they are still
streamed and scored by the one global model).

Timestamps in the output are the input's text; the synthetic grid exists only inside Kafka.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from iot_mlops.config import Settings
from iot_mlops.errors import ConfigError, ModelError, ServiceError
from iot_mlops.evaluation.scores import DEFAULT_PROBATION, ScoreReport, load_labels, score_corpus
from iot_mlops.events import MAX_ID_CHARS

GRID_FREQ = "1min"
GRID_STEP_NS = 60 * 1_000_000_000
# Far from 1970 so that clock jumps before a series' start still map to valid times.
GRID_EPOCH_NS = pd.Timestamp("2000-01-03T00:00:00Z").value
# Synthetic times must stay inside the reading schema's range (1970..2200).
MAX_GRID_INDEX = 100 * 365 * 24 * 60
MIN_GRID_INDEX = -25 * 365 * 24 * 60
MIN_STEP_ROWS = 16  # rows used to estimate a step at least, even if the probation is shorter
DEVICE_TYPE = "evaluation"
METRIC_NAME = "value"
DEFAULT_TIME_LIMIT_S = 120
# One partition: the detector then reads every file's rows in synthetic-time order, so each
# model call serves all files. With several partitions the consumer gets one partition's fetch
# at a time and the same corpus needs several times more model calls (measured: 2,214 calls for
# the 400k-row corpus on 1 partition, 10,067 on 6). Scale-out is not what is measured here.
DEFAULT_PARTITIONS = 1
DEFAULT_BATCH = 5000
# Training (model.forecaster.regularise) refuses a series missing more than 25 % of its grid points;
# leave a margin.
MAX_TRAIN_GAP_FRACTION = 0.2
# No committed progress for this long while the detector runs: something is stuck.
STALL_TIMEOUT_S = 600.0


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass
class SeriesData:
    """One input file: the original text of every row plus what the stream needs."""

    rel: str  # path relative to DATA_DIR (posix): the labels key and the output path
    device_id: str
    ts_text: np.ndarray  # object: original timestamp strings
    value_text: np.ndarray  # object: original value strings
    ts_ns: np.ndarray  # int64 UTC nanoseconds
    values: np.ndarray  # float64, NaN where not a finite number
    probation_rows: int = 0
    step_ns: float = 0.0
    phase_ns: float = 0.0
    grid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n(self) -> int:
        return len(self.ts_ns)

    def synthetic_ms(self) -> np.ndarray:
        return (GRID_EPOCH_NS + self.grid * GRID_STEP_NS) // 1_000_000

    def train_mask(self) -> np.ndarray:
        """Probation rows the detector would put in its context: a finite value on a grid step
        beyond every earlier row's (not a duplicate, not late)."""
        p = self.probation_rows
        finite = np.isfinite(self.values[:p])
        low = np.iinfo(np.int64).min
        # Dead-lettered rows never reach the detector's state, so they do not count as seen.
        g = np.where(finite, self.grid[:p], low)
        prev_max = np.maximum.accumulate(np.concatenate(([low], g[:-1])))
        return (g > prev_max) & finite


def _device_id(rel: str, i: int) -> str:
    if len(rel) <= MAX_ID_CHARS and rel.strip():
        return rel
    return f"{rel[: MAX_ID_CHARS - 24]}~{i:06d}"


def read_series(path: Path, rel: str, index: int, probation: float) -> SeriesData:
    """One CSV (``timestamp,value`` plus any ignored columns), every row kept as text."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise ConfigError(
            f"{path}: the file is empty (expected a header timestamp,value)"
        ) from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise ConfigError(f"{path}: cannot read it as CSV: {str(e).splitlines()[0]}") from None
    cols = {str(c).strip().lower(): c for c in df.columns}
    missing = [c for c in ("timestamp", "value") if c not in cols]
    if missing:
        raise ConfigError(
            f"{path}: missing column(s) {', '.join(missing)} "
            f"(has {', '.join(map(str, df.columns))})",
            fix="each CSV needs the header `timestamp,value`",
        )
    if df.empty:
        raise ConfigError(f"{path}: the file has a header but no rows")
    ts_text = df[cols["timestamp"]].to_numpy(dtype=object)
    value_text = df[cols["value"]].to_numpy(dtype=object)
    ts = pd.to_datetime(pd.Series(ts_text), utc=True, format="ISO8601", errors="coerce")
    bad = np.flatnonzero(ts.isna().to_numpy())
    if len(bad):
        row = int(bad[0])
        raise ConfigError(
            f"{path}: row {row + 2} has an unreadable timestamp {ts_text[row]!r}"
            + (f" ({len(bad)} such rows)" if len(bad) > 1 else ""),
            fix='use ISO 8601, e.g. "2026-01-01 00:00:00" (tz-naive means UTC)',
        )
    ts_ns = ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]").view(np.int64)
    values = pd.to_numeric(pd.Series(value_text), errors="coerce").to_numpy(dtype=np.float64)
    values[~np.isfinite(values)] = np.nan
    s = SeriesData(rel, _device_id(rel, index), ts_text, value_text, ts_ns, values)
    s.probation_rows = math.floor(probation * s.n)
    s.step_ns, s.phase_ns = estimate_grid(ts_ns, max(s.probation_rows, MIN_STEP_ROWS))
    grid = np.rint((ts_ns - s.phase_ns) / s.step_ns)
    if grid.max() > MAX_GRID_INDEX or grid.min() < MIN_GRID_INDEX:
        raise ConfigError(
            f"{path}: the series spans {int(grid.max() - grid.min()):,} of its own steps "
            f"({s.step_ns / 1e9:g} s), more than the evaluation grid holds"
        )
    s.grid = grid.astype(np.int64)
    return s


def _coherence(x: np.ndarray, freqs: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``|mean(exp(2 pi i f x))|`` per frequency: 1 when every point sits on a grid of step
    ``1/f``, near 0 when the points are spread over the phases of that grid."""
    out = np.empty(len(freqs))
    for a in range(0, len(freqs), chunk):
        ph = np.outer(freqs[a : a + chunk], x)
        out[a : a + chunk] = np.hypot(
            np.cos(2 * np.pi * ph).mean(1), np.sin(2 * np.pi * ph).mean(1)
        )
    return out


def estimate_grid(ts_ns: np.ndarray, n_fit: int) -> tuple[float, float]:
    """(step, phase) in ns of a series' own sampling grid ``t = phase + k * step``, from its
    first ``n_fit`` rows.

    The median positive difference is only a first guess: with jitter of up to ±40 % of a step
    it is a few per cent off, which over thousands of steps is many steps of drift, and rounding
    to a wrong step locks onto an alias (60 steps read as 61). So the step is the frequency of
    maximal phase coherence (the Rayleigh / epoch-folding periodogram) near the guess, coarse on
    a prefix and then fine on every row, polished by least squares of the timestamps on their
    step numbers, and snapped to a nominal interval when indistinguishable from one. The range
    searched (0.45 to 1.3 times the guess) also finds the step of a series that misses every
    other reading."""
    base = int(ts_ns[0])
    x = (ts_ns[: max(n_fit, 2)] - base).astype(np.float64) / 1e9  # seconds
    d = np.diff(x)
    d = d[d > 0]
    if not len(d):
        # One timestamp only (or all equal): any step works, every row is one grid point.
        return float(GRID_STEP_NS), float(base)
    f0 = 1.0 / float(np.median(d))
    span = float(x.max() - x.min())
    if len(d) < 4 or span <= 0:
        return 1e9 / f0, float(base)
    # Coarse: a prefix, bins of a quarter of the prefix's peak width.
    pre = x[:256]
    pspan = max(float(pre.max() - pre.min()), 1.0 / f0)
    coarse = np.arange(0.45 * f0, 1.3 * f0, 1.0 / (4.0 * pspan))
    fc = float(coarse[np.argmax(_coherence(pre, coarse))])
    # Fine: every row, around the coarse peak.
    fine = np.arange(fc - 1.0 / pspan, fc + 1.0 / pspan, 1.0 / (16.0 * span))
    fine = fine[fine > 0]
    coh = _coherence(x, fine)
    f = float(fine[np.argmax(coh)])
    z = np.exp(2j * np.pi * f * x).mean()
    phase = float(np.angle(z)) / (2 * np.pi * f)  # x = phase + k / f
    step = 1.0 / f
    # Polish: least squares on the rounded step numbers (exact on a regular series).
    sigma = math.inf
    for _ in range(2):
        k = np.rint((x - phase) / step)
        if len(np.unique(k)) < 3:
            break
        s_new, p_new = np.polyfit(k, x, 1)
        if not (s_new > 0 and abs(s_new - step) <= 0.01 * step):
            break
        step, phase = float(s_new), float(p_new)
        resid = x - (phase + step * k)
        sigma = float(np.sqrt((resid**2).sum() / (len(x) - 2) / ((k - k.mean()) ** 2).sum()))
    # Sensors sample at nominal intervals (whole seconds, or whole milliseconds below one
    # second). When the fit cannot tell the step from the nominal one (within 3 standard
    # errors), take the nominal one: extrapolated from the probation over a series several
    # times longer, even a 1e-4 error of a jittered fit is a drift of a large part of a step.
    unit = 1.0 if step >= 1.0 else 1e-3
    nominal = round(step / unit) * unit
    if nominal > 0 and abs(step - nominal) <= max(3 * sigma, 1e-9 * step):
        k = np.rint((x - phase) / nominal)
        phase = float(np.mean(x - nominal * k))
        step = nominal
    # Put step 0 at the first row, so every series starts at the grid epoch.
    phase += round((x[0] - phase) / step) * step
    return step * 1e9, base + phase * 1e9


def load_corpus(data_dir: Path, probation: float, out_dir: Path | None = None) -> list[SeriesData]:
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise ConfigError(f"data directory {data_dir} does not exist")
    if not data_dir.is_dir():
        raise ConfigError(f"{data_dir} is not a directory (DATA_DIR holds the CSV files)")
    if out_dir is not None:
        o, d = Path(out_dir).resolve(), data_dir.resolve()
        if o == d or d in o.parents:
            raise ConfigError(
                f"--out {out_dir} is inside DATA_DIR {data_dir}: the results would be read as "
                "input next time",
                fix="choose an output directory outside DATA_DIR",
            )
    paths = sorted(p for p in data_dir.rglob("*") if p.suffix.lower() == ".csv" and p.is_file())
    if not paths:
        raise ConfigError(
            f"no CSV files under {data_dir}",
            fix="DATA_DIR must hold CSV files (any depth) with columns timestamp,value",
        )
    return [
        read_series(p, p.relative_to(data_dir).as_posix(), i, probation)
        for i, p in enumerate(paths)
    ]


def training_frame(series: list[SeriesData], min_points: int) -> tuple[pd.DataFrame, list[str]]:
    """The probation rows on the synthetic grid, in the train schema; plus the files left out
    (too short or too gappy to fit)."""
    parts, left_out = [], []
    for s in series:
        keep = s.train_mask()
        g = s.grid[: s.probation_rows][keep]
        n = len(g)
        span = int(g.max() - g.min() + 1) if n else 0
        if n < min_points:
            left_out.append(f"{s.rel} ({n} usable probation points, needs {min_points})")
            continue
        if 1 - n / span > MAX_TRAIN_GAP_FRACTION:
            left_out.append(f"{s.rel} (probation misses {1 - n / span:.0%} of its grid steps)")
            continue
        ts = pd.to_datetime(GRID_EPOCH_NS + g * GRID_STEP_NS, utc=True)
        parts.append(
            pd.DataFrame(
                {
                    "device_id": s.device_id,
                    "device_type": DEVICE_TYPE,
                    "metric_name": METRIC_NAME,
                    "metric_value": s.values[: s.probation_rows][keep],
                    "timestamp": ts,
                    "is_anomaly": False,
                }
            )
        )
    if not parts:
        raise ConfigError(
            "no file has enough regular data in its probation part to train on "
            f"({'; '.join(left_out[:3])})",
            fix="use longer series or a larger --probation",
        )
    return pd.concat(parts, ignore_index=True), left_out


# --------------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------------


@dataclass
class Topics:
    input: str
    anomalies: str
    dlq: str
    scores: str
    group: str

    @classmethod
    def fresh(cls) -> Topics:
        base = f"iot-eval-{uuid.uuid4().hex[:12]}"
        return cls(base, f"{base}.anomalies", f"{base}.dlq", f"{base}.scores", f"{base}-detector")

    def all(self) -> list[str]:
        return [self.input, self.anomalies, self.dlq, self.scores]


def _progress(console: Any | None, description: str, total: int) -> Any:
    from iot_mlops.cli.progress import progress_bar

    p = progress_bar(console, enabled=console is not None, transient=True)
    p.add_task(description, total=total)
    return p


def stream_order(series: list[SeriesData]) -> tuple[np.ndarray, np.ndarray]:
    """(file index, row) of every row in production order: the files interleaved by synthetic
    time, like a fleet reporting live, each file strictly in its own row order (a late row,
    whose grid step is behind, follows its predecessor: the key is the running maximum).

    Why it matters for speed: a series needs one model call per ``prediction_length`` steps and
    the calls of one series are sequential, so the longest file sets a floor on the number of
    calls; the other files only ride along if their readings arrive in the same batches."""
    fidx = np.concatenate([np.full(s.n, i, dtype=np.int64) for i, s in enumerate(series)])
    rows = np.concatenate([np.arange(s.n, dtype=np.int64) for s in series])
    key = np.concatenate([np.maximum.accumulate(s.grid) for s in series])
    order = np.lexsort((rows, fidx, key))
    return fidx[order], rows[order]


def produce(
    settings: Settings,
    topic: str,
    series: list[SeriesData],
    partitions: int = 1,
    console: Any | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every row to ``topic`` (idempotent producer, key = device id, file ``i`` on partition
    ``i % partitions`` so it stays in order). Returns per file the (partition, offset) of each
    row, from the delivery reports: with idempotence they arrive in production order per
    partition (checked: offsets strictly increase), so one shared callback is enough."""
    from confluent_kafka import Producer

    errors: list[str] = []
    delivered: list[list[int]] = [[] for _ in range(partitions)]

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            if len(errors) < 5:
                errors.append(str(err))
            return
        delivered[msg.partition()].append(msg.offset())

    stamps = [
        np.char.add(
            np.datetime_as_string(s.synthetic_ms().astype("datetime64[ms]"), unit="ms"), "Z"
        ).tolist()
        for s in series
    ]
    values = [
        [
            float(v) if v == v else txt
            for v, txt in zip(s.values.tolist(), s.value_text, strict=True)
        ]
        for s in series
    ]
    keys = [s.device_id.encode() for s in series]
    part_of = [i % partitions for i in range(len(series))]
    p = Producer(
        {
            **settings.kafka_common(),
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 200_000,
            "on_delivery": on_delivery,
        }
    )
    fidx, rows = stream_order(series)
    total = len(fidx)
    dumps = orjson.dumps
    with _progress(console, "produce the rows", total) as prog:
        task = prog.task_ids[0]
        for n, (i, r) in enumerate(zip(fidx.tolist(), rows.tolist(), strict=True)):
            payload = dumps(
                {
                    "device_id": series[i].device_id,
                    "device_type": DEVICE_TYPE,
                    "metric_name": METRIC_NAME,
                    # A value that is not a finite number goes as its text: dead-lettered.
                    "metric_value": values[i][r],
                    "timestamp": stamps[i][r],
                }
            )
            while True:
                try:
                    p.produce(topic, payload, key=keys[i], partition=part_of[i])
                    break
                except BufferError:
                    p.poll(0.05)
            if n % 5000 == 0:
                p.poll(0)
                prog.update(task, completed=n)
        left = p.flush(120)
        prog.update(task, completed=total)
    if left or errors:
        raise ServiceError(
            f"{left} of {total:,} rows were not delivered to {topic}"
            + (f": {errors[0]}" if errors else ""),
            fix="check the broker with `iot-mlops stack status`",
        )
    where = [(np.full(s.n, -1, dtype=np.int32), np.full(s.n, -1, dtype=np.int64)) for s in series]
    part_arr = np.asarray(part_of)[fidx]
    for part in range(partitions):
        sel = part_arr == part
        offs = np.asarray(delivered[part], dtype=np.int64)
        if len(offs) != int(sel.sum()) or (len(offs) > 1 and np.any(np.diff(offs) <= 0)):
            raise ServiceError(
                f"Kafka's delivery reports for {topic}[{part}] do not match what was produced"
            )
        for i, r, o in zip(fidx[sel].tolist(), rows[sel].tolist(), offs.tolist(), strict=True):
            where[i][0][r] = part
            where[i][1][r] = o
    return where


class _Group:
    """Committed offsets of the detector's group vs the input's end offsets."""

    def __init__(self, settings: Settings, group: str, topic: str, ends: dict[int, int]) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.c = Consumer({**settings.kafka_common(), "group.id": group})
        self.tps = [TopicPartition(topic, p) for p in sorted(ends)]
        self.ends = ends

    def done(self) -> int:
        from confluent_kafka import KafkaException

        try:
            got = self.c.committed(self.tps, timeout=10)
        except KafkaException:
            return -1  # coordinator moving / loading: ask again
        return sum(min(max(tp.offset, 0), self.ends[tp.partition]) for tp in got)

    def close(self) -> None:
        self.c.close()


@contextlib.contextmanager
def running_detector(settings: Settings) -> Iterator[Any]:
    """The real detector in a thread of this process; stopped (and its error raised) on exit."""
    from iot_mlops.detector.runner import Detector

    det = Detector(settings)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            det.run()
        except BaseException as e:  # surfaced below
            failure.append(e)

    t = threading.Thread(target=run, name="evaluate-detector", daemon=True)
    t.start()
    det.thread, det.failure = t, failure  # type: ignore[attr-defined]
    try:
        yield det
    finally:
        det.stop()
        t.join(120)
    if failure:
        e = failure[0]
        raise ServiceError(f"the detector failed: {type(e).__name__}: {e}") from e


def run_detector(
    settings: Settings, ends: dict[int, int], version: str, console: Any | None = None
) -> dict[str, float]:
    """Run the detector until its group has committed every input offset. Returns where the
    time went: seconds in all, until the model was loaded, in model calls; calls, batches."""
    total = sum(ends.values())
    t0 = time.perf_counter()
    loaded_at: float | None = None
    group = _Group(settings, settings.consumer_group, settings.input_topic, ends)
    try:
        with (
            running_detector(settings) as det,
            _progress(console, "detect (real detector, via Kafka)", total) as prog,
        ):
            task = prog.task_ids[0]
            last, last_change = 0, time.monotonic()
            while True:
                if det.failure:  # type: ignore[attr-defined]
                    break
                if version in det.watcher.failed:
                    raise ModelError(
                        f"the detector could not load {settings.model_name} version {version}"
                    )
                if loaded_at is None and det.engine is not None:
                    loaded_at = time.perf_counter() - t0
                done = group.done()
                if done >= total:
                    prog.update(task, completed=total)
                    break
                now = time.monotonic()
                if done > last:
                    last, last_change = done, now
                    prog.update(task, completed=done)
                elif now - last_change > STALL_TIMEOUT_S:
                    raise ServiceError(
                        f"the detector made no progress for {STALL_TIMEOUT_S:.0f} s "
                        f"({last:,} of {total:,} rows committed)",
                        fix="check the broker and the detector's log output",
                    )
                time.sleep(0.5)
    finally:
        group.close()
    seconds = time.perf_counter() - t0

    def sample(name: str) -> float:
        return float(det.m.registry.get_sample_value(name) or 0.0)

    return {
        "stream_seconds": seconds,
        "model_load_seconds": loaded_at if loaded_at is not None else float("nan"),
        "model_calls": sample("iot_model_call_duration_seconds_count"),
        "model_call_seconds": sample("iot_model_call_duration_seconds_sum"),
        "series_forecasts": sample("iot_forecast_batch_size_sum"),
        "batches": float(det.batches),
    }


def read_topic(settings: Settings, topic: str, console: Any | None = None) -> list[Any]:
    """Every committed message of ``topic`` (read_committed), up to its end offsets now."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    c = Consumer(
        {
            **settings.kafka_common(),
            "group.id": f"evaluate-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    out: list[Any] = []
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        open_parts = {p for p, e in ends.items() if e > 0}
        c.assign([TopicPartition(topic, p, 0) for p in open_parts])
        deadline = time.monotonic() + 300
        with _progress(console, f"read {topic}", sum(ends.values())) as prog:
            task = prog.task_ids[0]
            while open_parts and time.monotonic() < deadline:
                for m in c.consume(10_000, timeout=0.5):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            open_parts.discard(m.partition())
                        continue
                    out.append(m)
                prog.update(task, completed=len(out))
        if open_parts:
            raise ServiceError(f"reading {topic} timed out ({len(out):,} messages read)")
    finally:
        c.close()
    return out


def delete_topics(settings: Settings, topics: list[str]) -> None:
    from iot_mlops.kafka.topics import admin_client

    with contextlib.suppress(Exception):
        for fut in admin_client(settings).delete_topics(topics, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                fut.result(timeout=30)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class FileResult:
    score: np.ndarray  # float64 in [0, 1]
    flag: np.ndarray  # bool
    outcome: np.ndarray  # object: scored | warming_up | late | duplicate | dead_letter


def collect_scores(
    series: list[SeriesData],
    where: list[tuple[np.ndarray, np.ndarray]],
    records: list[Any],
    dead: list[Any],
    version: str,
) -> list[FileResult]:
    """Map each score record (and dead letter) back to its (file, row)."""
    n_parts = 1 + max(int(w[0].max()) for w in where)
    ends = [0] * n_parts
    for w in where:
        for p in range(n_parts):
            sel = w[0] == p
            if sel.any():
                ends[p] = max(ends[p], int(w[1][sel].max()) + 1)
    lookup = [np.full(e, -1, dtype=np.int64) for e in ends]  # offset -> global row id
    starts = np.cumsum([0] + [s.n for s in series])
    for i, (part, off) in enumerate(where):
        for p in range(n_parts):
            sel = part == p
            lookup[p][off[sel]] = starts[i] + np.flatnonzero(sel)
    total = int(starts[-1])
    score = np.zeros(total)
    flag = np.zeros(total, dtype=bool)
    outcome = np.full(total, "missing", dtype=object)
    other_versions: Counter[str] = Counter()
    for m in records:
        r = orjson.loads(m.value())
        p, o = int(r["source_partition"]), int(r["source_offset"])
        if p >= n_parts or o >= len(lookup[p]) or lookup[p][o] < 0:
            continue  # not one of ours (cannot happen on a fresh topic)
        g = lookup[p][o]
        outcome[g] = r["outcome"]
        if r["outcome"] == "scored":
            score[g] = min(max(float(r["anomaly_score"] or 0.0), 0.0), 1.0)
            flag[g] = bool(r["is_anomaly"])
            if r.get("model_version") is not None and str(r["model_version"]) != str(version):
                other_versions[str(r["model_version"])] += 1
    for m in dead:
        hdr = dict(m.headers() or [])
        with contextlib.suppress(KeyError, ValueError, IndexError):
            p, o = int(hdr["source.partition"]), int(hdr["source.offset"])
            if lookup[p][o] >= 0:
                outcome[lookup[p][o]] = "dead_letter"
    if other_versions:
        raise ModelError(
            f"{sum(other_versions.values())} rows were scored by another version "
            f"({', '.join(sorted(other_versions))}) than the evaluated version {version}: the "
            "alias moved during the evaluation",
            fix="run one evaluation per --model-name at a time",
        )
    return [
        FileResult(score[a:b], flag[a:b], outcome[a:b])
        for a, b in itertools.pairwise(starts.tolist())
    ]


def write_results(out_dir: Path, series: list[SeriesData], results: list[FileResult]) -> None:
    for s, r in zip(series, results, strict=True):
        path = out_dir / s.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {
                "timestamp": s.ts_text,
                "value": s.value_text,
                "anomaly_score": np.round(r.score, 6),
                "is_anomaly": np.where(r.flag, "true", "false"),
            }
        ).to_csv(path, index=False)


# --------------------------------------------------------------------------------------------
# The whole evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    report: ScoreReport
    scores_path: Path
    summary: dict[str, Any]  # the "evaluation" block of scores.json
    run_id: str | None


def _mlflow_metrics(report: ScoreReport, timing: dict[str, float]) -> dict[str, float]:
    m: dict[str, float] = {}
    for prof, v in report.scores.items():
        if v is not None:
            m[f"nab_{prof}"] = float(v)
    for view, met in (("point", report.point), ("event", report.event)):
        for k in ("precision", "recall", "f1"):
            m[f"{view}_{k}"] = float(getattr(met, k))
    for kind, ks in report.kinds.items():
        m[f"recall_{kind}"] = float(ks.recall)
    m.update({f"{k}": float(v) for k, v in timing.items()})
    return {k: v for k, v in m.items() if math.isfinite(v)}


def log_evaluation(
    settings: Settings,
    scores_path: Path,
    report: ScoreReport,
    summary: dict[str, Any],
    params: dict[str, Any],
) -> str:
    """One MLflow run (tag run_type=evaluation) in the experiment, linked to the model version
    and its training run; returns its id."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from iot_mlops.lifecycle.registry import check_mlflow, get_version

    check_mlflow(settings)
    timing = {
        k: summary[k]
        for k in ("train_seconds", "stream_seconds", "total_seconds", "rows_per_second")
        if k in summary
    }
    metrics = _mlflow_metrics(report, timing)
    try:
        mv = get_version(settings, summary["model_version"])
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        mlflow.set_registry_uri(settings.mlflow_tracking_uri)
        mlflow.set_experiment(settings.experiment_name)
        tags = {
            "run_type": "evaluation",
            "model_name": settings.model_name,
            "model_version": summary["model_version"],
            "model_uri": f"models:/{settings.model_name}/{summary['model_version']}",
            "training_run_id": summary["training_run_id"],
            "mlflow.note.content": (
                f"Causal evaluation of {settings.model_name} version {summary['model_version']} "
                f"on {summary['files']} labelled files ({summary['rows']:,} rows) streamed "
                "through the real detector."
            ),
        }
        run_name = f"evaluate-{settings.model_name}-v{summary['model_version']}"
        with mlflow.start_run(run_name=run_name, tags=tags) as run:
            mlflow.log_params(params)
            # MLflow 3 links metrics to the logged model behind the version (shown on the
            # model's page); older servers without logged models get plain run metrics.
            model_id = getattr(mv, "model_id", None)
            linked = False
            if model_id:
                with contextlib.suppress(MlflowException):
                    mlflow.log_metrics(metrics, model_id=model_id)
                    linked = True
            if not linked:
                mlflow.log_metrics(metrics)
            summary["evaluation_run_id"] = run.info.run_id
            data = json.loads(scores_path.read_text())
            data["evaluation"]["evaluation_run_id"] = run.info.run_id
            scores_path.write_text(json.dumps(data, indent=1) + "\n")
            mlflow.log_artifact(str(scores_path))
            with contextlib.suppress(MlflowException):
                client = mlflow.MlflowClient()
                client.set_model_version_tag(
                    settings.model_name,
                    summary["model_version"],
                    "evaluation_run_id",
                    run.info.run_id,
                )
        return run.info.run_id
    except MlflowException as e:
        raise ServiceError(
            f"logging the evaluation to MLflow at {settings.mlflow_tracking_uri} failed: "
            f"{str(e).splitlines()[0][:300]}"
        ) from None


def evaluate(
    settings: Settings,
    data_dir: Path,
    labels_path: Path,
    out_dir: Path,
    probation: float = DEFAULT_PROBATION,
    time_limit_s: int = DEFAULT_TIME_LIMIT_S,
    model_name: str | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    batch_max_messages: int = DEFAULT_BATCH,
    keep_topics: bool = False,
    console: Any | None = None,
) -> EvaluationResult:
    """Train on the probation parts, stream everything through the real detector, score it
    against the labels and log it (see the module docstring)."""
    from iot_mlops.kafka.topics import create_topics
    from iot_mlops.lifecycle.registry import check_mlflow, promote
    from iot_mlops.model.forecaster import min_series_length
    from iot_mlops.training.pipeline import Reporter, parse_models, train

    t_start = time.perf_counter()
    rep = Reporter(console)
    # MLflow's per-file download bars would drown the evaluation's own progress.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not 0.0 < probation < 1.0:
        raise ConfigError(f"--probation must be in (0, 1), got {probation}")
    data_dir, out_dir, labels_path = Path(data_dir), Path(out_dir), Path(labels_path)
    s = settings.with_overrides(
        model_name=model_name or f"{settings.model_name}-evaluation",
        train_time_limit_s=time_limit_s,
    )

    # 1. Inputs first: bad data is cheap to report, before any service or minutes of fitting.
    with rep.phase("read the CSV files and labels"):
        labels = load_labels(labels_path)
        series = load_corpus(data_dir, probation, out_dir)
        rels = {x.rel for x in series}
        unknown = sorted(set(labels) - rels)
        if unknown:
            raise ConfigError(
                f"labels file {labels_path} names {len(unknown)} file(s) that are not under "
                f"{data_dir}: {', '.join(unknown[:5])}",
                fix="keys of LABELS.json are CSV paths relative to DATA_DIR",
            )
        n_rows = sum(x.n for x in series)
        n_bad = sum(int(np.isnan(x.values).sum()) for x in series)
        rep.note(
            f"{len(series)} files, {n_rows:,} rows"
            + (f", {n_bad} non-numeric values (streamed, dead-lettered)" if n_bad else "")
            + f"; labels for {len(labels)} files"
        )
        parse_models(s.train_models)  # a bad --models fails now, not after streaming
        need = min_series_length(s.prediction_length, s.holdout_fraction)
        train_df, left_out = training_frame(series, need)
        for x in left_out:
            rep.note(f"[yellow]not trained on:[/] {x}")
    check_mlflow(s)
    topics = Topics.fresh()
    create_topics(s, {t: partitions for t in topics.all()})
    ds = s.with_overrides(
        input_topic=topics.input,
        anomalies_topic=topics.anomalies,
        dlq_topic=topics.dlq,
        scores_topic=topics.scores,
        consumer_group=topics.group,
        batch_max_messages=batch_max_messages,
        alias_poll_interval_s=2.0,
    )
    workdir = Path(tempfile.mkdtemp(prefix="iot-mlops-evaluate-"))
    try:
        # 2. Stream in: independent of the model, so done first (the detector reads from 0).
        t0 = time.perf_counter()
        where = produce(ds, topics.input, series, partitions, console)
        produce_seconds = time.perf_counter() - t0
        rep.note(f"produced {n_rows:,} rows to {topics.input} in {produce_seconds:.1f} s")

        # 3. Train on the probation parts only; register and promote under the evaluation name.
        train_path = workdir / "probation.parquet"
        train_df.to_parquet(train_path, index=False)
        t0 = time.perf_counter()
        tr = train(s, train_path, promote=False, console=console)
        promote(s, tr.version, force=True)
        train_seconds = time.perf_counter() - t0
        rep.note(f"{s.model_name} version {tr.version} → alias {s.model_alias}")

        # 4. The real detector, until every input offset is committed.
        ends: dict[int, int] = {}
        for part, off in where:
            for p, o in zip(part.tolist(), off.tolist(), strict=True):
                ends[p] = max(ends.get(p, 0), o + 1)
        for p in range(partitions):
            ends.setdefault(p, 0)
        stream = run_detector(ds, ends, tr.version, console)
        stream_seconds = stream["stream_seconds"]
        rep.note(
            f"detector scored {n_rows:,} rows in {stream_seconds:.1f} s "
            f"({n_rows / max(stream_seconds, 1e-9):,.0f} rows/s)"
        )

        # 5. Back to (file, row).
        with rep.phase("collect the scores"):
            records = read_topic(ds, topics.scores, console)
            dead = read_topic(ds, topics.dlq, console)
            results = collect_scores(series, where, records, dead, tr.version)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if not keep_topics:
            delete_topics(s, topics.all())

    # 6. Outputs and scores.
    with rep.phase("write the results and score them"):
        out_dir.mkdir(parents=True, exist_ok=True)
        write_results(out_dir, series, results)
        frames = {
            x.rel: pd.DataFrame({"timestamp": x.ts_ns.view("datetime64[ns]"), "is_anomaly": r.flag})
            for x, r in zip(series, results, strict=True)
        }
        report = score_corpus(frames, labels, probation)
    outcomes = Counter()
    for r in results:
        outcomes.update(r.outcome.tolist())
    total_seconds = time.perf_counter() - t_start
    summary: dict[str, Any] = {
        "files": len(series),
        "rows": n_rows,
        "model_name": s.model_name,
        "model_version": tr.version,
        "training_run_id": tr.run_id,
        "best_model": tr.best_model,
        "models": s.train_models,
        "time_limit_s": time_limit_s,
        "probation": probation,
        "grid_freq": GRID_FREQ,
        "training_rows": len(train_df),
        "not_trained_on": left_out,
        "outcomes": dict(sorted(outcomes.items())),
        "produce_seconds": round(produce_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "stream_seconds": round(stream_seconds, 2),
        "total_seconds": round(total_seconds, 2),
        "rows_per_second": round(n_rows / max(stream_seconds, 1e-9), 1),
        "detector": {k: round(v, 3) for k, v in stream.items() if math.isfinite(v)},
        "topics": topics.all() if keep_topics else [],
        "series_steps_s": {x.rel: round(x.step_ns / 1e9, 6) for x in series},
    }
    data = {"evaluation": summary, **report.to_dict()}
    scores_path = out_dir / "scores.json"
    scores_path.write_text(json.dumps(data, indent=1) + "\n")
    params = {
        "data_dir": str(data_dir),
        "labels": str(labels_path),
        "files": len(series),
        "rows": n_rows,
        "probation": probation,
        "time_limit_s": time_limit_s,
        "models": s.train_models,
        "grid_freq": GRID_FREQ,
        "partitions": partitions,
        "batch_max_messages": batch_max_messages,
        "host_cpus": os.cpu_count() or 0,
    }
    run_id = log_evaluation(s, scores_path, report, summary, params)
    return EvaluationResult(report, scores_path, summary, run_id)
