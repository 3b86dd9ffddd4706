"""Input topic → parquet training set.

Reads every partition of the input topic from its beginning up to the end offsets (high
watermarks) taken at start, so a topic that keeps growing (a live simulator, real devices)
still gives a finite, reproducible snapshot. Each message is validated with the event schema;
invalid ones are counted by reason and skipped; exact duplicates of a (series, timestamp) are
dropped keeping the first (a producer retry or a repeated backfill would otherwise weight
those points twice in training).

Output columns are those of ``simulate.generate`` except ``anomaly_kind``, which readings do
not carry: ``device_id, device_type, metric_name, metric_value (float64), timestamp
(datetime64[ms, UTC]), is_anomaly``. ``is_anomaly`` is a plain ``bool`` column when every
reading carries a label, else pandas' nullable ``boolean`` with <NA> for unlabelled readings
(never guessed as False: an unknown label must not count as a true negative).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from rich.console import Console
from rich.table import Table

from iot_mlops.config import Settings
from iot_mlops.data.sinks import write_parquet_atomic
from iot_mlops.errors import ConfigError, ServiceError
from iot_mlops.events import Reading, ReadingError, decode_reading, format_ts
from iot_mlops.kafka import clients
from iot_mlops.progress import progress_bar

# With read_committed a partition can stall below its high watermark behind an open
# transaction; after this long without any progress we stop instead of waiting forever.
IDLE_TIMEOUT_S = 30.0
_EMPTY_FIX = "produce some data first, e.g. `iot-mlops simulate --hours 24`"


@dataclass
class CollectReport:
    topic: str
    out: Path
    partitions: int = 0
    consumed: int = 0  # messages read, valid or not
    rows: int = 0  # rows written
    series: int = 0
    labelled: int = 0
    unlabelled: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    beyond_until: int = 0  # valid readings at or after --until, left out
    stalled_partitions: list[int] = field(default_factory=list)
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def render(self) -> Table:
        t = Table(title=f"collect {self.topic} → {self.out}")
        t.add_column("item")
        t.add_column("value", justify="right")
        t.add_row("partitions", str(self.partitions))
        t.add_row("messages read", f"{self.consumed:,}")
        t.add_row("rows written", f"[green]{self.rows:,}[/]")
        t.add_row("series", f"{self.series:,}")
        if self.first_ts_ms is not None and self.last_ts_ms is not None:
            t.add_row("first reading", format_ts(self.first_ts_ms))
            t.add_row("last reading", format_ts(self.last_ts_ms))
        t.add_row("labelled anomalies", f"{self.labelled:,}")
        if self.unlabelled:
            t.add_row("readings without label", f"{self.unlabelled:,}")
        t.add_row("duplicates dropped", f"{self.duplicates:,}")
        if self.beyond_until:
            t.add_row("after --until, left out", f"{self.beyond_until:,}")
        total = self.rejected_total
        t.add_row("rejected", f"[red]{total:,}[/]" if total else "0")
        for reason, n in sorted(self.rejected.items()):
            t.add_row(f"  {reason}", f"{n:,}")
        if self.stalled_partitions:
            t.add_row(
                "[yellow]stalled partitions[/]",
                ", ".join(map(str, self.stalled_partitions)),
            )
        return t


def _consumer(settings: Settings) -> Consumer:
    # A throwaway group that never commits: collecting must not move the detector's offsets,
    # and two collects must not share partitions.
    return clients.reader(
        settings, "iot-mlops-collect", quiet=True, **{"enable.auto.offset.store": False}
    )


def _end_offsets(consumer: Consumer, settings: Settings, topic: str) -> dict[int, tuple[int, int]]:
    """(low, high) watermark per partition, taken now."""
    try:
        offsets = clients.watermarks(consumer, topic)
    except KafkaException as e:
        raise clients.kafka_unreachable(settings, e) from None
    if offsets is None:
        raise ConfigError(
            f"topic {topic} does not exist on Kafka at {settings.kafka_bootstrap_servers}",
            fix=_EMPTY_FIX,
        )
    return offsets


def collect(
    settings: Settings,
    out: Path,
    *,
    until_ms: int | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> CollectReport:
    """Snapshot ``settings.input_topic`` into the parquet file ``out``.

    ``until_ms`` keeps only readings strictly before that time; a partition stops at its first
    reading at or after it (readings of one device arrive in time order, and a device always
    lands in the same partition)."""
    topic = settings.input_topic
    report = CollectReport(topic, out)
    consumer = _consumer(settings)
    try:
        offsets = _end_offsets(consumer, settings, topic)
        report.partitions = len(offsets)
        todo = {p: hi for p, (lo, hi) in offsets.items() if hi > lo}
        total = sum(hi - lo for lo, hi in offsets.values())
        if total == 0:
            raise ConfigError(f"topic {topic} is empty: nothing to collect", fix=_EMPTY_FIX)
        consumer.assign([TopicPartition(topic, p, offsets[p][0]) for p in todo])
        cols = _read(consumer, settings, todo, total, until_ms, report, progress, console)
    finally:
        consumer.close()

    df = _frame(cols, report)
    if df.empty:
        raise ConfigError(
            f"topic {topic} holds no valid reading"
            + (f" before {format_ts(until_ms)}" if until_ms is not None else ""),
            fix=_EMPTY_FIX,
        )
    write_parquet_atomic(df, out)
    return report


def _read(
    consumer: Consumer,
    settings: Settings,
    todo: dict[int, int],
    total: int,
    until_ms: int | None,
    report: CollectReport,
    progress: bool,
    console: Console | None,
) -> dict[str, list]:
    """The valid readings of the assigned partitions up to their ends in ``todo``, as
    columns; rejected and late ones counted in ``report``."""
    topic = settings.input_topic
    cols: dict[str, list] = {k: [] for k in _COLUMNS}
    with progress_bar(console, enabled=progress) as bar:
        task = bar.add_task("collect", total=total)

        def take(msg: Message) -> bool:
            report.consumed += 1
            bar.advance(task)
            try:
                r = decode_reading(msg.value(), settings.max_message_bytes)
            except ReadingError as e:
                report.rejected[e.reason] += 1
                return True
            if until_ms is not None and r.timestamp_ms >= until_ms:
                report.beyond_until += 1
                return False  # this partition is done: its later readings are later still
            for name, value in zip(_COLUMNS, _row(r), strict=True):
                cols[name].append(value)
            return True

        left = clients.read_to_end(
            consumer, {(topic, p): end for p, end in todo.items()}, take,
            idle_timeout_s=IDLE_TIMEOUT_S,
            on_fatal=lambda err: ServiceError(f"reading {topic} failed: {err}"),
        )  # fmt: skip
        report.stalled_partitions = sorted(p for _t, p in left)
        bar.update(task, completed=total)
    return cols


_COLUMNS = ("device_id", "device_type", "metric_name", "metric_value", "ts", "is_anomaly")


def _row(r: Reading) -> tuple:
    return r.device_id, r.device_type, r.metric_name, r.metric_value, r.timestamp_ms, r.is_anomaly


def _frame(cols: dict[str, list], report: CollectReport) -> pd.DataFrame:
    ts = np.asarray(cols["ts"], dtype=np.int64)
    labels = cols["is_anomaly"]
    n_unlabelled = sum(1 for x in labels if x is None)
    df = pd.DataFrame(
        {
            "device_id": pd.Series(cols["device_id"], dtype=object),
            "device_type": pd.Series(cols["device_type"], dtype=object),
            "metric_name": pd.Series(cols["metric_name"], dtype=object),
            "metric_value": np.asarray(cols["metric_value"], dtype=np.float64),
            "timestamp": pd.Series(ts.astype("datetime64[ms]")).dt.tz_localize("UTC"),
            "is_anomaly": pd.Series(labels, dtype="boolean" if n_unlabelled else bool),
        }
    )
    before = len(df)
    # keep="first": within a series, consumption order is offset order (same key, same
    # partition), so the first-produced copy wins.
    df = df.drop_duplicates(subset=["device_id", "metric_name", "timestamp"], keep="first")
    report.duplicates = before - len(df)
    df = df.sort_values(["timestamp", "device_id", "metric_name"], kind="stable")
    df = df.reset_index(drop=True)
    report.rows = len(df)
    if len(df):
        report.series = int(df.groupby(["device_id", "metric_name"]).ngroups)
        report.labelled = int(df["is_anomaly"].sum(skipna=True))
        report.unlabelled = int(df["is_anomaly"].isna().sum())
        report.first_ts_ms = int(ts.min())
        report.last_ts_ms = int(ts.max())
    return df
