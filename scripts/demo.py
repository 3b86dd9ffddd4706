"""``make demo``: the whole pipeline on the embedded stack, with a live summary.

stack up → (unless a production model exists, or --retrain) backfill simulated history into
Kafka → collect → train → register → promote → live simulator + detector, then a live view in
the terminal. Ctrl-C stops everything the demo started. With DEMO_SECONDS=N it stops by itself
after N seconds and prints a summary with precision and recall against the simulator's labels.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from pathlib import Path

import httpx
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from iot_mlops.config import Settings
from iot_mlops.errors import IotMlopsError
from iot_mlops.events import decode_anomaly, decode_reading
from iot_mlops.kafka.stack import Stack, http_ok

console = Console()
ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("iot-mlops"))


def run(*args: str, env: dict[str, str] | None = None) -> None:
    """An iot-mlops command; ``env``: the role's settings on a secure stack (Stack.role_env)."""
    console.rule(f"[bold]iot-mlops {' '.join(args)}")
    subprocess.run([CLI, *args], check=True, env={**os.environ, **(env or {})})


def latest_timestamp_ms(s: Settings) -> int | None:
    """The newest reading's time in the input topic, so a new live run continues after it
    (a reading older than its series' last one would be skipped as late)."""
    c = Consumer({**s.kafka_common(), "group.id": f"demo-probe-{uuid.uuid4().hex}"})
    try:
        parts = c.list_topics(s.input_topic, timeout=10).topics[s.input_topic].partitions
        latest = None
        for p in parts:
            low, high = c.get_watermark_offsets(TopicPartition(s.input_topic, p), timeout=10)
            if high <= low:
                continue
            c.assign([TopicPartition(s.input_topic, p, max(low, high - 50))])
            for m in c.consume(50, timeout=5):
                with contextlib.suppress(Exception):
                    ts = decode_reading(m.value()).timestamp_ms
                    latest = ts if latest is None else max(latest, ts)
        return latest
    finally:
        c.close()


def start_group_at_live_edge(s: Settings) -> None:
    """A new detector group would start at the beginning of the topic and score the whole
    backfill (the training data) before the live part. For the demo, commit the group's
    offsets at the current end instead: the detector rebuilds each series' context from the
    log before them and scores the live stream at once. An existing group is left as it is."""
    c = Consumer({**s.kafka_common(), "group.id": s.consumer_group, "enable.auto.commit": False})
    try:
        parts = c.list_topics(s.input_topic, timeout=10).topics[s.input_topic].partitions
        tps = [TopicPartition(s.input_topic, p) for p in parts]
        if any(tp.offset >= 0 for tp in c.committed(tps, timeout=10)):
            return
        ends = [
            TopicPartition(s.input_topic, tp.partition, c.get_watermark_offsets(tp, timeout=10)[1])
            for tp in tps
        ]
        c.commit(offsets=ends, asynchronous=False)
    finally:
        c.close()


def scrape(url: str) -> dict[str, float]:
    """Sum each metric family over its labels."""
    try:
        text = httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            out[smp.name] = out.get(smp.name, 0.0) + smp.value
            if smp.name == "iot_model_info" and smp.value == 1:
                out["model_version"] = float(smp.labels["model_version"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--retrain", action="store_true", help="train a new model even if one is promoted"
    )
    ap.add_argument("--hours", type=float, default=float(os.environ.get("DEMO_HOURS", 48)))
    ap.add_argument("--rate", type=float, default=float(os.environ.get("DEMO_RATE", 40)))
    ap.add_argument(
        "--seconds", type=float, default=float(os.environ.get("DEMO_SECONDS", 0)) or None
    )
    ap.add_argument(
        "--keep-stack", action="store_true", help="leave Kafka/MLflow running at the end"
    )
    ap.add_argument(
        "--secure",
        action="store_true",
        help="TLS and authentication (stack up --secure); each step runs as its own principal",
    )
    args = ap.parse_args()

    # A demo should reach the live part in minutes: cap training unless the user chose.
    os.environ.setdefault("IOT_MLOPS_TRAIN_TIME_LIMIT_S", "120")
    # The live simulator's clock runs ahead of the wall clock (one interval per round, ~60x at
    # the default rate): past the detector's bound on event times ahead of the record time
    # (1 h) every reading would be dead-lettered as clock_skew after a minute.
    os.environ.setdefault("IOT_MLOPS_EVENT_TIME_MAX_AHEAD_S", "0")
    stack = Stack(Settings(), secure=args.secure)
    # The demo's own probes and live view (and evaluate-like reads of the anomalies) as the
    # stack's admin: on a secure stack no pipeline principal may read everything it shows.
    s = stack.s
    role = stack.role_env
    started_stack = not all(st.healthy for st in stack.status() if st.name != "prometheus")
    procs: list[subprocess.Popen] = []
    t_begin = time.monotonic()
    try:
        run("stack", "up", *(["--secure"] if stack.secrets else []))
        from iot_mlops.lifecycle.registry import resolve_alias

        version = resolve_alias(s)
        if version is None or args.retrain:
            data = Path(s.state_dir) / "demo" / "training.parquet"
            data.parent.mkdir(parents=True, exist_ok=True)
            run("simulate", "--hours", f"{args.hours:g}", env=role("device"))
            run("collect", "--out", str(data), env=role("trainer"))
            run("train", "--data", str(data), "--promote", env=role("trainer"))
        else:
            console.print(
                f"[green]reusing {s.model_name} version {version} (alias {s.model_alias}); "
                "pass --retrain to train a new one"
            )
        start_group_at_live_edge(s)
        start = latest_timestamp_ms(s)
        start_iso = None
        if start is not None:
            from iot_mlops.events import format_ts

            start_iso = format_ts(start + s.sim_interval_s * 1000)
        sim_args = [CLI, "simulate", "--rate", f"{args.rate:g}", "--no-progress"]
        if start_iso:
            sim_args += ["--start", start_iso]
        log_dir = Path(s.state_dir) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        det_log = (log_dir / "demo-detector.log").open("ab")
        sim_log = (log_dir / "demo-simulator.log").open("ab")
        for cmd, log, who in (
            ([CLI, "detect"], det_log, "detector"),
            (sim_args, sim_log, "device"),
        ):
            env = {**os.environ, **role(who)}
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
        metrics_url = f"http://127.0.0.1:{s.metrics_port}/metrics"
        console.print(
            Panel.fit(
                f"MLflow UI          {s.mlflow_tracking_uri}"
                + ("  (user admin: `iot-mlops stack env admin`)\n" if stack.secrets else "\n")
                + f"detector metrics   {metrics_url}  (health: /healthz)\n"
                f"Prometheus         http://127.0.0.1:{s.prometheus_port}\n"
                f"Grafana            docker compose (see README); dashboard: grafana.json\n"
                f"logs               {log_dir}",
                title="where to look",
            )
        )
        summary = live_view(s, metrics_url, procs, args.seconds)
    except KeyboardInterrupt:
        summary = None
        console.print("\ninterrupted: stopping what the demo started")
    except (IotMlopsError, subprocess.CalledProcessError, RuntimeError) as e:
        console.print(f"[red]demo failed:[/] {e}")
        return 1
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        if started_stack and not args.keep_stack:
            stack.down()
            console.print("stack stopped (`make demo` again reuses the trained model)")
    if summary is not None:
        print_summary(summary, time.monotonic() - t_begin)
    return 0


def live_view(
    s: Settings, metrics_url: str, procs: list[subprocess.Popen], seconds: float | None
) -> dict[str, float]:
    c = Consumer(
        {
            **s.kafka_common(),
            "group.id": f"demo-view-{uuid.uuid4().hex}",
            "auto.offset.reset": "latest",
            "isolation.level": "read_committed",
        }
    )
    c.subscribe([s.anomalies_topic])
    latest: deque[dict] = deque(maxlen=8)
    # DEMO_SECONDS counts from the moment the detector scores (model loaded, partitions
    # assigned): loading a model takes from seconds to a minute on a busy machine.
    health = metrics_url.replace("/metrics", "/healthz")
    deadline = time.monotonic() + 600
    with console.status("waiting for the detector to load the model and join the group…"):
        while not http_ok(health):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the detector did not become ready; see its log ({health})")
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[1]} exited with {p.returncode}; see its log")
            time.sleep(1)
    t0 = time.monotonic()
    prev, prev_t = {}, t0
    rate = 0.0
    m: dict[str, float] = {}
    try:
        with Live(console=console, refresh_per_second=2) as live:
            while seconds is None or time.monotonic() - t0 < seconds:
                for msg in c.consume(100, timeout=0.5):
                    if msg.error() is None:
                        ev = decode_anomaly(msg.value())
                        if ev.get("event") == "opened" and ev.get("level") == "series":
                            latest.appendleft(ev)
                for p in procs:
                    if p.poll() is not None:
                        raise RuntimeError(f"{p.args[1]} exited with {p.returncode}; see its log")
                now = time.monotonic()
                if now - prev_t >= 2:
                    m = scrape(metrics_url) or m
                    rate = (m.get("iot_readings_total", 0) - prev.get("iot_readings_total", 0)) / (
                        now - prev_t
                    )
                    prev, prev_t = m, now
                live.update(render(m, rate, latest, now - t0))
    finally:
        c.close()
    return m


def render(m: dict[str, float], rate: float, latest: deque[dict], elapsed: float) -> Group:
    tp, fp = m.get("iot_live_true_positives_total", 0), m.get("iot_live_false_positives_total", 0)
    fn = m.get("iot_live_false_negatives_total", 0)
    head = Table.grid(padding=(0, 3))
    head.add_row(
        f"[bold]{elapsed:,.0f}s[/]",
        f"readings/s [bold]{rate:,.0f}[/]",
        f"readings [bold]{m.get('iot_readings_total', 0):,.0f}[/]",
        f"episodes [bold red]{m.get('iot_anomalies_total', 0):,.0f}[/]",
        f"model v[bold]{m.get('model_version', 0):.0f}[/]",
        f"precision [bold]{tp / (tp + fp) if tp + fp else 0:.2f}[/]",
        f"recall [bold]{tp / (tp + fn) if tp + fn else 0:.2f}[/]",
    )
    t = Table(title="latest anomaly episodes (onsets)", expand=True)
    for col in ("time", "device", "metric", "actual", "predicted", "interval", "score", "label"):
        t.add_column(col)
    for a in latest:
        t.add_row(
            a["timestamp"][11:19], a["device_id"], a["metric_name"], f"{a['actual_value']:.2f}",
            f"{a['predicted_value']:.2f}", f"[{a['lower']:.2f}, {a['upper']:.2f}]",
            f"{a['anomaly_score']:.2f}", "✔" if a.get("labelled_anomaly") else "✘",
        )  # fmt: skip
    return Group(head, t)


def print_summary(m: dict[str, float], wall: float) -> None:
    tp, fp = m.get("iot_live_true_positives_total", 0), m.get("iot_live_false_positives_total", 0)
    fn = m.get("iot_live_false_negatives_total", 0)
    t = Table(title="demo summary")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("wall time", f"{wall:,.0f} s")
    t.add_row("readings scored", f"{m.get('iot_readings_total', 0):,.0f}")
    t.add_row("anomaly episodes opened", f"{m.get('iot_anomalies_total', 0):,.0f}")
    t.add_row("dead letters", f"{m.get('iot_dead_letters_total', 0):,.0f}")
    t.add_row("model version", f"{m.get('model_version', 0):.0f}")
    t.add_row(
        "precision (labelled, in episode)",
        f"{tp / (tp + fp) if tp + fp else 0:.3f}  ({tp:.0f} TP, {fp:.0f} FP)",
    )
    recall = tp / (tp + fn) if tp + fn else 0
    t.add_row("recall (labelled, in episode)", f"{recall:.3f}  ({fn:.0f} FN)")
    console.print(t)


if __name__ == "__main__":
    sys.exit(main())
