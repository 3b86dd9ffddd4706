"""The stream of ``evaluate``: every reading to a fresh input topic, the real detector on it
until its group has committed every input offset, and the outputs read back.

Each row of a file becomes one reading per metric, produced in row order (the metrics of a
row consecutively, key = the device, so a file stays on one partition, in order); the files
are interleaved by synthetic time, like a fleet reporting live.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from iot_mlops.config import Settings
from iot_mlops.errors import ModelError, ServiceError
from iot_mlops.evaluation.datasets import SeriesData
from iot_mlops.evaluation.grid import DEVICE_TYPE

# No committed progress for this long while the detector runs: something is stuck.
STALL_TIMEOUT_S = 600.0
# The watcher retries a failed load (the registry may be restarting); give up after this many.
LOAD_ATTEMPTS = 3


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
    from iot_mlops.progress import progress_bar

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


def message_order(series: list[SeriesData]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(file index, row, metric column) of every reading in production order: the rows in
    ``stream_order``, each expanded into its metrics, consecutively."""
    fidx, rows = stream_order(series)
    m = np.asarray([s.m for s in series], dtype=np.int64)[fidx]
    f, r = np.repeat(fidx, m), np.repeat(rows, m)
    cols = np.arange(len(f), dtype=np.int64) - np.repeat(np.cumsum(m) - m, m)
    return f, r, cols


def _payloads(series: list[SeriesData], order: tuple[np.ndarray, ...]) -> Iterator[bytes]:
    stamps = [
        np.char.add(
            np.datetime_as_string(s.synthetic_ms().astype("datetime64[ms]"), unit="ms"), "Z"
        ).tolist()
        for s in series
    ]
    values = [s.values.tolist() for s in series]
    dumps = orjson.dumps
    for i, r, j in zip(*(a.tolist() for a in order), strict=True):
        v = values[i][r][j]
        s = series[i]
        yield dumps(
            {
                "device_id": s.device_id,
                "device_type": DEVICE_TYPE,
                "metric_name": s.metrics[j],
                # A value that is not a finite number goes as its text: dead-lettered.
                "metric_value": v if v == v else s.value_text[r, j],
                "timestamp": stamps[i][r],
            }
        )


def produce(
    settings: Settings,
    topic: str,
    series: list[SeriesData],
    partitions: int = 1,
    console: Any | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every reading to ``topic`` (idempotent producer, key = device id, file ``i`` on
    partition ``i % partitions`` so it stays in order). Returns per file the (partition,
    offset) of each reading, arrays of shape (rows, metrics), from the delivery reports: with
    idempotence they arrive in production order per partition (checked: offsets strictly
    increase), so one shared callback is enough."""
    from confluent_kafka import Producer

    errors: list[str] = []
    delivered: list[list[int]] = [[] for _ in range(partitions)]

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            if len(errors) < 5:
                errors.append(str(err))
            return
        delivered[msg.partition()].append(msg.offset())

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
    order = message_order(series)
    keys = [s.device_id.encode() for s in series]
    total = len(order[0])
    with _progress(console, "produce the readings", total) as prog:
        task = prog.task_ids[0]
        payloads = _payloads(series, order)
        for n, (i, payload) in enumerate(zip(order[0].tolist(), payloads, strict=True)):
            while True:
                try:
                    p.produce(topic, payload, key=keys[i], partition=i % partitions)
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
            f"{left} of {total:,} readings were not delivered to {topic}"
            + (f": {errors[0]}" if errors else ""),
            fix="check the broker with `iot-mlops stack status`",
        )
    return _where(series, order, partitions, delivered, topic)


def _where(
    series: list[SeriesData],
    order: tuple[np.ndarray, np.ndarray, np.ndarray],
    partitions: int,
    delivered: list[list[int]],
    topic: str,
) -> list[tuple[np.ndarray, np.ndarray]]:
    shape = [(s.n, s.m) for s in series]
    where = [(np.full(sh, -1, dtype=np.int32), np.full(sh, -1, dtype=np.int64)) for sh in shape]
    fidx, rows, cols = order
    part_arr = fidx % partitions
    for part in range(partitions):
        sel = part_arr == part
        offs = np.asarray(delivered[part], dtype=np.int64)
        if len(offs) != int(sel.sum()) or (len(offs) > 1 and np.any(np.diff(offs) <= 0)):
            raise ServiceError(
                f"Kafka's delivery reports for {topic}[{part}] do not match what was produced"
            )
        for i in np.unique(fidx[sel]).tolist():
            mine = fidx[sel] == i
            where[i][0][rows[sel][mine], cols[sel][mine]] = part
            where[i][1][rows[sel][mine], cols[sel][mine]] = offs[mine]
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
                failure = det.watcher.failed.get(version)
                if failure is not None and failure.attempts >= LOAD_ATTEMPTS:
                    raise ModelError(
                        f"the detector could not load {settings.model_name} version {version} "
                        f"({failure.attempts} attempts): {failure.reason}"
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
    from iot_mlops.kafka.clients import read_topic as read_all

    with _progress(console, f"read {topic}", 0) as prog:
        task = prog.task_ids[0]

        def shown(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        return read_all(settings, topic, on_progress=shown)


def delete_topics(settings: Settings, topics: list[str]) -> None:
    from iot_mlops.kafka.clients import admin

    with contextlib.suppress(Exception):
        for fut in admin(settings).delete_topics(topics, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                fut.result(timeout=30)
