"""Detector benchmark (``make bench``): real broker, real registered AutoGluon model, 1,000 series.

Reports, in one run on one machine:
  * sustained readings/s through the detector, from a pre-filled topic to all offsets committed;
  * p50/p99 detection latency (Kafka timestamp → transaction committed) at a fixed offered load;
  * (a) the per-message design of the seed system (one model call per reading);
  * (b) the raw consume-and-decode rate of the same topic with no model (the physical limit);
and the ratios between them, next to the model, horizon, refresh policy and forecast accuracy.

Results: bench/results/detector-<timestamp>.json. Usage: ``.venv/bin/python bench/bench_detector.py
[--series 1000] [--prefill-steps 300] [--offered-rate 5000] [--load-seconds 30]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from iot_mlops.config import Settings
from iot_mlops.data.simulate import build_fleet, generate, readings
from iot_mlops.detector.runner import Detector
from iot_mlops.events import ReadingError, decode_reading, encode_reading
from iot_mlops.kafka.stack import Stack, free_port
from iot_mlops.kafka.topics import create_topics
from iot_mlops.lifecycle.registry import load_forecaster
from iot_mlops.training.pipeline import train

console = Console()
RESULTS = Path(__file__).resolve().parent / "results"


def fleet_for(n_series: int, seed: int) -> list:
    n_dev = max(1, n_series // 3)
    while True:
        fleet = build_fleet(seed, n_dev)
        total = sum(len(d.metrics) for d in fleet)
        if total >= n_series:
            return fleet
        n_dev += 10


def produce(s: Settings, df, rate: float | None = None, stop: threading.Event | None = None) -> int:
    p = Producer({**s.kafka_common(), "enable.idempotence": True, "linger.ms": 20})
    n = 0
    t0 = time.perf_counter()
    for r in readings(df):
        if stop is not None and stop.is_set():
            break
        while True:
            try:
                p.produce(s.input_topic, encode_reading(r), key=r.device_id)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
        if n % 5000 == 0:
            p.poll(0)
        if rate is not None and n % 100 == 0:
            ahead = n / rate - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
    p.flush(120)
    return n


def committed_total(s: Settings, parts: int) -> int:
    c = Consumer({**s.kafka_common(), "group.id": s.consumer_group})
    try:
        tps = [TopicPartition(s.input_topic, p) for p in range(parts)]
        return sum(max(0, tp.offset) for tp in c.committed(tps, timeout=10))
    except Exception:
        return 0
    finally:
        c.close()


def latency_buckets(det: Detector) -> dict[float, float]:
    """Cumulative bucket counts of the detector's latency histogram."""
    out: dict[float, float] = {}
    for metric in det.metrics.detection_latency.collect():
        for smp in metric.samples:
            if smp.name.endswith("_bucket"):
                out[float(smp.labels["le"])] = smp.value
    return out


def histogram_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Prometheus-style quantile of the observations made between two snapshots (linear
    interpolation inside a bucket, like PromQL's histogram_quantile)."""
    buckets = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = buckets[-1][1]
    if total <= 0:
        return float("nan")
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9)
        prev_le, prev_c = le, c
    return prev_le


@dataclass
class Bench:
    """One benchmark run: its settings, fleet (the first ``args.series`` series of it) and the
    figures gathered so far."""

    args: argparse.Namespace
    s: Settings
    fleet: list
    keep: list[str]
    start: int
    result: dict
    seed: int = 11
    interval: int = 60

    def only(self, df):  # type: ignore[no-untyped-def]
        return df[(df.device_id + "/" + df.metric_name).isin(set(self.keep))]

    def steps(self, first_step: int, n: int):  # type: ignore[no-untyped-def]
        """``n`` steps of the bench's series from step ``first_step`` after ``start``."""
        df = generate(self.fleet, self.start + first_step * 60_000, n, self.interval, self.seed)
        return self.only(df)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--history-steps", type=int, default=720)
    ap.add_argument("--prefill-steps", type=int, default=300)
    ap.add_argument("--offered-rate", type=float, default=5000.0)
    ap.add_argument("--load-seconds", type=float, default=30.0)
    ap.add_argument("--prediction-length", type=int, default=32)
    ap.add_argument("--models", default="RecursiveTabular")
    ap.add_argument("--time-limit", type=int, default=120)
    ap.add_argument("--partitions", type=int, default=6)
    return ap.parse_args()


def bench_settings(args: argparse.Namespace, state: Path) -> Settings:
    kp, cp, mp = free_port(), free_port(), free_port()
    return Settings(
        state_dir=state, kafka_port=kp, kafka_controller_port=cp,
        kafka_bootstrap_servers=f"127.0.0.1:{kp}", mlflow_port=mp,
        mlflow_tracking_uri=f"http://127.0.0.1:{mp}", metrics_port=free_port(),
        input_partitions=args.partitions, train_models=args.models,
        train_time_limit_s=args.time_limit, prediction_length=args.prediction_length,
        context_length=128, model_name="bench-model", experiment_name="bench",
        batch_max_messages=10_000, series_gauge_limit=50, alias_poll_interval_s=30,
    )  # fmt: skip


def main() -> None:
    args = parse_args()
    state = Path(tempfile.mkdtemp(prefix="iot-bench-"))
    s = bench_settings(args, state)
    stack = Stack(s, with_prometheus=False)
    result: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "args": vars(args),
    }  # fmt: skip
    try:
        with console.status("starting Kafka and MLflow"):
            stack.up()
        b = new_bench(args, s, result)
        train_model(b, state / "history.parquet")
        s1, n = prefill(b)
        raw_rate, got = raw_consume_rate(s, s1.input_topic, n)
        det = Detector(s1)
        th = threading.Thread(target=det.run, daemon=True)
        sustained = sustained_rate(b, s1, det, th, n)
        offered_latency(b, s1, det, n)
        det.stop()
        th.join(60)
        per_message = per_message_rate(s)
        result["per_message_design"] = {"readings_per_s": per_message["rate"],
                                        "calls": per_message["calls"]}  # fmt: skip
        result["raw_consume_decode"] = {"readings_per_s": raw_rate, "readings": got}
        result["ratios"] = {
            "sustained_over_per_message": sustained / per_message["rate"],
            "sustained_over_raw": sustained / raw_rate,
        }
    finally:
        stack.down()
    report(b, result)


def new_bench(args: argparse.Namespace, s: Settings, result: dict) -> Bench:
    seed = 11
    fleet = fleet_for(args.series, seed)
    start = 1_795_000_000_000 // 60_000 * 60_000
    hist = generate(fleet, start, args.history_steps, 60, seed)
    keep = sorted(hist.assign(k=hist.device_id + "/" + hist.metric_name)["k"].unique())[
        : args.series
    ]
    return Bench(args, s, fleet, keep, start, result, seed=seed)


def train_model(b: Bench, path: Path) -> None:
    args, s = b.args, b.s
    b.steps(0, args.history_steps).to_parquet(path)
    console.print(f"training {args.models} on {len(b.keep)} series x {args.history_steps} steps")
    tr = train(s, path, promote=True)
    b.result["model"] = {
        "models": args.models, "best_model": tr.best_model, "version": tr.version,
        "prediction_length": args.prediction_length, "context_length": s.context_length,
        "refresh_policy": "batched: every series whose forecast block is used up, one model "
        "call per round; blocks aligned to absolute time",
        "mase": tr.metrics.get("mase"), "wql": tr.metrics.get("wql"),
        "train_seconds": tr.train_seconds,
    }  # fmt: skip


def prefill(b: Bench) -> tuple[Settings, int]:
    """A fresh topic holding ``prefill_steps`` of readings; the settings that use it."""
    args = b.args
    live = b.steps(args.history_steps, args.prefill_steps)
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    s1 = b.s.model_copy(
        update={
            "input_topic": topic,
            "anomalies_topic": topic + ".anomalies",
            "dlq_topic": topic + ".dlq",
            "consumer_group": topic + "-g",
        }
    )
    create_topics(
        s1, {topic: args.partitions, s1.anomalies_topic: args.partitions, s1.dlq_topic: 1}
    )
    n = produce(s1, live)
    console.print(f"pre-filled {n:,} readings")
    return s1, n


def raw_consume_rate(s: Settings, topic: str, n: int) -> tuple[float, int]:
    """(b) raw consume + decode of the same topic: the physical limit."""
    c = Consumer({**s.kafka_common(), "group.id": f"raw-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    c.subscribe([topic])
    got, t0 = 0, None
    while got < n:
        msgs = c.consume(10_000, timeout=1.0)
        if t0 is None and msgs:
            t0 = time.perf_counter()
        for m in msgs:
            if m.error() is None:
                with contextlib.suppress(ReadingError):
                    decode_reading(m.value())
                got += 1
    raw_rate = got / (time.perf_counter() - t0)
    c.close()
    return raw_rate, got


def sustained_rate(b: Bench, s1: Settings, det: Detector, th: threading.Thread, n: int) -> float:
    """Sustained: detector from the start of the topic to every offset committed."""
    t_start = time.perf_counter()
    th.start()
    while det.engine is None:
        time.sleep(0.05)
    t_model = time.perf_counter()
    while committed_total(s1, b.args.partitions) < n:
        time.sleep(0.2)
    t_done = time.perf_counter()
    sustained = n / (t_done - t_model)
    b.result["sustained"] = {
        "readings": n, "seconds": t_done - t_model, "readings_per_s": sustained,
        "model_load_seconds": t_model - t_start,
    }  # fmt: skip
    return sustained


def offered_latency(b: Bench, s1: Settings, det: Detector, n: int) -> None:
    """Latency at a fixed offered load, the detector caught up and running. Only the
    observations of this phase count: the pre-fill's latencies measure how long a backlog
    waited, not the service time."""
    args = b.args
    before = latency_buckets(det)
    steps = int(args.offered_rate * args.load_seconds / len(b.keep)) + 1
    more = b.steps(args.history_steps + args.prefill_steps, steps)
    t0 = time.perf_counter()
    offered = produce(s1, more, rate=args.offered_rate)
    produce_s = time.perf_counter() - t0
    while committed_total(s1, args.partitions) < n + offered:
        time.sleep(0.2)
    after = latency_buckets(det)
    b.result["latency"] = {
        "offered_rate": args.offered_rate, "achieved_offered_rate": offered / produce_s,
        "readings": offered, "p50_s": histogram_quantile(before, after, 0.5),
        "p99_s": histogram_quantile(before, after, 0.99),
        "method": "detector's latency histogram over this phase, linear in bucket",
    }  # fmt: skip


def per_message_rate(s: Settings) -> dict[str, float]:
    """(a) the seed system's design: one model call per reading."""
    f = load_forecaster(s)
    ctx = f.example_context(n_items=1)
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 20 and calls < 200:
        f.forecast(ctx)
        calls += 1
    return {"rate": calls / (time.perf_counter() - t0), "calls": calls}


def report(b: Bench, result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"detector-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2, default=float))
    sustained = result["sustained"]["readings_per_s"]
    per_message = result["per_message_design"]["readings_per_s"]
    raw_rate = result["raw_consume_decode"]["readings_per_s"]
    t = Table(title=f"detector benchmark ({len(b.keep)} series) → {out.name}")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("target", justify="right")
    t.add_row("sustained readings/s", f"{sustained:,.0f}", "≥ 20,000")
    t.add_row("p50 latency @ offered load", f"{result['latency']['p50_s'] * 1000:.0f} ms", "")
    t.add_row(
        "p99 latency @ offered load", f"{result['latency']['p99_s'] * 1000:.0f} ms", "< 250 ms"
    )
    t.add_row("per-message design readings/s", f"{per_message:,.1f}", "")
    t.add_row("sustained / per-message", f"{sustained / per_message:,.0f}x", "≥ 500x")
    t.add_row("raw consume+decode readings/s", f"{raw_rate:,.0f}", "")
    t.add_row("sustained / raw", f"{sustained / raw_rate:.2f}", "≥ 0.10")
    t.add_row(
        "model / horizon", f"{result['model']['best_model']} / {b.args.prediction_length}", ""
    )
    t.add_row(
        "holdout MASE / WQL", f"{result['model']['mase']:.3f} / {result['model']['wql']:.4f}", ""
    )
    console.print(t)


if __name__ == "__main__":
    main()
