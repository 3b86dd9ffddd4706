"""Helpers of the fault-injection suite: a paced producer thread, a 3-node KRaft cluster built
from the embedded stack's ``Kafka`` service, /metrics scraping, exactly-once accounting and
the figures file (bench/results/reliability.json)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import platform
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from detector_helpers import (
    ProductionModel,
    caught_up,
    committed_offsets,
    detector_process,
    read_all,
    stop_detector,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families

from iot_mlops.config import Settings
from iot_mlops.data.simulate import generate, readings
from iot_mlops.events import decode_anomaly, encode_reading
from iot_mlops.kafka.stack import Kafka, free_port
from iot_mlops.kafka.topics import create_topics

REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "bench" / "results" / "reliability.json"
AnomalyKey = tuple[str, str, str, str, str]


# --- the stream -------------------------------------------------------------------------------


def stream(pm: ProductionModel, start_step: int, steps: int) -> list[tuple[bytes, bytes]]:
    """The fleet's readings continuing the training history, as (key, value) messages."""
    start = pm.end_ms + start_step * pm.interval_s * 1000
    df = generate(pm.fleet, start, steps, pm.interval_s, pm.seed)
    return [(r.device_id.encode(), encode_reading(r)) for r in readings(df)]


class FeedingProducer(threading.Thread):
    """Produces ``messages`` to the input topic in chunks spread over ``seconds`` while faults
    are injected (idempotent, acks=all: a broker failure must not lose or duplicate input).
    Delivery failures are counted, never ignored."""

    def __init__(
        self, settings: Settings, messages: list[tuple[bytes, bytes]], seconds: float,
        chunk: int = 100,
    ) -> None:  # fmt: skip
        super().__init__(name="feeding-producer", daemon=True)
        self.s, self.messages, self.seconds, self.chunk = settings, messages, seconds, chunk
        self.delivered = 0
        self.failed: list[str] = []
        self.error: BaseException | None = None
        self.start_time = 0.0
        self.start()

    def _on_delivery(self, err: object, _msg: object) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed.append(str(err))

    def run(self) -> None:
        try:
            p = Producer(
                {
                    **self.s.kafka_common(),
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "message.timeout.ms": 300_000,
                }
            )
            self.start_time = time.monotonic()
            n_chunks = max(1, -(-len(self.messages) // self.chunk))
            pause = self.seconds / n_chunks
            for i in range(0, len(self.messages), self.chunk):
                for key, value in self.messages[i : i + self.chunk]:
                    while True:
                        try:
                            p.produce(
                                self.s.input_topic, value, key=key, on_delivery=self._on_delivery
                            )
                            break
                        except BufferError:  # queue full while a broker is away
                            p.poll(0.1)
                p.poll(0)
                time.sleep(pause)
            remaining = p.flush(300)
            if remaining:
                self.failed.append(f"{remaining} messages still undelivered after 300 s")
        except BaseException as e:
            self.error = e

    def finish(self, timeout: float = 400) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the producer did not finish"
        if self.error is not None:
            raise self.error
        assert not self.failed, f"producer delivery failures: {self.failed[:3]}"
        assert self.delivered == len(self.messages)


@dataclass
class Reference:
    messages: list[tuple[bytes, bytes]]
    expected: Counter[AnomalyKey]
    seconds: float  # how long the uninterrupted run took to commit everything


def private_services(base: Settings, state_dir: Path, *services: str) -> Settings:
    """``base`` with its own state dir and free ports for the named services ("kafka",
    "mlflow"), so a test can stop and start them without touching the session's; the other
    services stay the session's."""
    update: dict[str, object] = {"state_dir": state_dir}
    if "kafka" in services:
        port = free_port()
        update.update(
            kafka_port=port,
            kafka_controller_port=free_port(),
            kafka_bootstrap_servers=f"127.0.0.1:{port}",
        )
    if "mlflow" in services:
        port = free_port()
        update.update(mlflow_port=port, mlflow_tracking_uri=f"http://127.0.0.1:{port}")
    return base.model_copy(update=update)


def fresh_topics(base: Settings, prefix: str, partitions: int = 3, rf: int = 1) -> Settings:
    """Unique input/anomalies/DLQ topics and group on ``base``'s broker."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    s = base.model_copy(
        update={
            "input_topic": name,
            "anomalies_topic": f"{name}.anomalies",
            "dlq_topic": f"{name}.dlq",
            "consumer_group": f"grp-{name}",
        }
    )
    create_topics(
        s,
        {s.input_topic: partitions, s.anomalies_topic: partitions, s.dlq_topic: partitions},
        replication_factor=rf,
    )
    return s


# --- exactly-once accounting --------------------------------------------------------------


def key_of(ev: dict) -> AnomalyKey:
    """An episode event: which change (opened / closed) of which episode (level, series or
    device, and its start), so a run's events compare one to one with the reference's."""
    return (ev.get("event", ""), ev.get("level", ""), ev["device_id"], ev["metric_name"] or "",
            ev["timestamp"])  # fmt: skip


def anomaly_keys(settings: Settings, topic: str | None = None) -> Counter[AnomalyKey]:
    msgs = read_all(settings, topic or settings.anomalies_topic)
    return Counter(key_of(decode_anomaly(m.value())) for m in msgs)


@dataclass
class Tally:
    expected: int
    published: int
    lost: list[AnomalyKey] = field(default_factory=list)
    duplicated: list[AnomalyKey] = field(default_factory=list)
    unexpected: list[AnomalyKey] = field(default_factory=list)

    def check(self) -> None:
        assert not self.duplicated, f"duplicated anomalies: {self.duplicated[:5]}"
        assert not self.lost, f"lost anomalies: {self.lost[:5]}"
        assert not self.unexpected, (
            f"anomalies the reference run did not publish: {self.unexpected[:5]}"
        )
        assert self.expected > 0


def compare(expected: Counter[AnomalyKey], got: Counter[AnomalyKey]) -> Tally:
    return Tally(
        expected=sum(expected.values()),
        published=sum(got.values()),
        lost=sorted(set(expected) - set(got)),
        duplicated=sorted(k for k, n in got.items() if n > 1),
        unexpected=sorted(set(got) - set(expected)),
    )


def committed_total(s: Settings) -> int:
    """Input offsets the detector group has committed, over all partitions (0 while unknown)."""
    return sum(max(0, o) for o in committed_offsets(s).values())


@dataclass
class Outcome:
    """What a run under a fault published, against the reference run."""

    tally: Tally
    problems: list[str]  # crash lines in the detector logs
    figures: dict  # the figures every fault records

    def check(self) -> None:
        self.tally.check()
        assert not self.problems, self.problems[:5]


def outcome(
    s: Settings, reference: Reference, feeder: FeedingProducer, logs: Iterable[Path]
) -> Outcome:
    tally = compare(reference.expected, anomaly_keys(s))
    problems = [p for log in logs for p in log_problems(log.read_text(errors="replace"))]
    figures = {
        "readings_in": len(reference.messages),
        "producer_delivered": feeder.delivered,
        "producer_failures": len(feeder.failed),
        "anomalies_expected": tally.expected,
        "anomalies_out": tally.published,
        "lost": len(tally.lost),
        "duplicated": len(tally.duplicated),
        "unexpected": len(tally.unexpected),
    }
    return Outcome(tally, problems, figures)


class FaultRun:
    """The reference stream fed (over ``feed_seconds``) into one ``iot-mlops detect`` process
    while the test injects its fault; ``stop`` drains, stops the detector and compares what it
    published with the reference run."""

    def __init__(
        self, s: Settings, reference: Reference, tmp_path: Path, feed_seconds: float,
        **env: str,
    ) -> None:  # fmt: skip
        # Named, so a restarted detector fences the transaction its killed predecessor left.
        self.s, self.reference = s, reference
        self.env = {"IOT_MLOPS_INSTANCE_ID": "fault-run", **env}
        self.total = len(reference.messages)
        self.feeder = FeedingProducer(s, reference.messages, seconds=feed_seconds)
        self.log = tmp_path / "detector.log"
        self.proc = detector_process(s, self.log, **self.env)
        self.restarts = 0

    def done(self) -> int:
        return committed_total(self.s)

    def wait_done(self, above: int, timeout: float, what: str, every: float = 0.5) -> None:
        """Wait until more than ``above`` input offsets are committed."""
        wait_until(lambda: self.done() > above, timeout, what, every)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def restart(self) -> None:
        self.proc = detector_process(self.s, self.log, **self.env)
        self.restarts += 1

    def drain(self, what: str = "detector caught up") -> None:
        """The whole stream delivered, and every input offset committed."""
        self.feeder.finish()
        wait_until(lambda: caught_up(self.s), 300, what)

    def stop(self) -> Outcome:
        """SIGTERM the detector (it must exit 0), then tally what it published."""
        stop_detector(self.proc, self.log)
        return outcome(self.s, self.reference, self.feeder, [self.log])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


@contextlib.contextmanager
def fault_run(
    s: Settings, reference: Reference, tmp_path: Path, feed_seconds: float, **env: str
) -> Iterator[FaultRun]:
    run = FaultRun(s, reference, tmp_path, feed_seconds, **env)
    try:
        yield run
    finally:
        run.close()


# --- a detector process's HTTP endpoints ---------------------------------------------------


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics of a detector process as {(sample name, sorted labels): value}; {} if down."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=3).text
    except httpx.HTTPError:
        return {}
    out = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            out[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    return out


def metric_sum(metrics: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in metrics.items() if n == name and want <= set(lab))


def healthz(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
    except httpx.HTTPError:
        return None


def log_problems(text: str) -> list[str]:
    """Lines of a detector log that show a crash. A traceback the HTTP server prints for a
    scrape whose client hung up (BrokenPipe/ConnectionReset while writing the answer) is the
    client's problem, not a crash, and is skipped."""
    bad = ("Traceback (most recent call last)", "CRITICAL", "Fatal Python error", "Segmentation")
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        if not any(b in line for b in bad):
            continue
        if "Traceback" in line and i > 0 and "during processing of request" in lines[i - 1]:
            end = next((j for j in range(i, len(lines)) if lines[j].startswith("----")), i)
            if any(e in lines[end - 1] for e in ("BrokenPipeError", "ConnectionResetError")):
                continue
        out.append(line)
    return out


# --- figures ----------------------------------------------------------------------------------


def record(fault: str, figures: dict) -> None:
    """Merge one fault's figures into bench/results/reliability.json and print them."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(FIGURES.read_text())
    except (FileNotFoundError, ValueError):
        data = {}
    data.setdefault("faults", {})[fault] = {
        **figures,
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    data["machine"] = {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    data["command"] = ".venv/bin/pytest -m reliability -s"
    FIGURES.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"\nRELIABILITY {fault}: {json.dumps(figures, sort_keys=True)}")


# --- a 3-node KRaft cluster on loopback ---------------------------------------------------


def kafka_uuid() -> str:
    """A Kafka ``Uuid`` string (URL-safe base64 of 16 random bytes, as StorageTool prints)."""
    while True:
        s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not s.startswith("-"):
            return s


class ClusterNode(Kafka):
    """One broker+controller of a multi-node KRaft cluster: the embedded stack's ``Kafka``
    service (process management, command line, logging) with multi-node server properties
    and formatting with ``--initial-controllers``."""

    def __init__(self, settings: Settings, node_id: int, cluster: KRaftCluster) -> None:
        self.name = f"kafka{node_id}"
        self.node_id = node_id
        self.cluster = cluster
        super().__init__(settings)

    def server_properties(self) -> dict[str, str]:
        """The embedded stack's properties, made multi-node: this node's id, the whole
        quorum, and replication factor 3 with min ISR 2 everywhere."""
        return {
            **super().server_properties(),
            "node.id": str(self.node_id),
            "controller.quorum.bootstrap.servers": self.cluster.controller_bootstrap,
            "num.partitions": "3",
            "default.replication.factor": "3",
            "min.insync.replicas": "2",
            "offsets.topic.replication.factor": "3",
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": "3",
            "transaction.state.log.min.isr": "2",
            "transaction.state.log.num.partitions": "6",
            "share.coordinator.state.topic.replication.factor": "3",
            "share.coordinator.state.topic.min.isr": "2",
            # Quick failure detection of a killed peer on one machine.
            "broker.session.timeout.ms": "6000",
            "broker.heartbeat.interval.ms": "1000",
            "replica.lag.time.max.ms": "6000",
        }

    def prepare(self) -> None:
        """Configuration only: the cluster formats every node's storage together."""
        self.write_config()

    def format_cmd(self) -> list[str]:
        c = self.cluster
        return self._java(
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "kafka.tools.StorageTool", "format", "-t", c.cluster_id,
            "-c", str(self.dir / "server.properties"),
            "--initial-controllers", c.initial_controllers,
        )  # fmt: skip

    def healthy(self) -> bool:
        try:
            admin = AdminClient(
                {"bootstrap.servers": f"127.0.0.1:{self.s.kafka_port}", "socket.timeout.ms": 2000}
            )
            md = admin.list_topics(timeout=2)
            return self.node_id in md.brokers
        except Exception:
            return False

    def kill(self) -> None:
        """SIGKILL the broker's JVM: no controlled shutdown, no flush."""
        pid = self.pid()
        assert pid is not None, f"{self.name} is not running"
        os.kill(pid, signal.SIGKILL)
        psutil.Process(pid).wait(30)
        self.pidfile.unlink(missing_ok=True)


class KRaftCluster:
    """Three broker+controller nodes on loopback: distinct node ids, ports and log dirs, one
    cluster id, formatted with ``--initial-controllers``; replication factor 3 and
    ``min.insync.replicas=2`` for every topic including the offsets and transaction logs."""

    def __init__(self, base: Settings, root: Path, n: int = 3) -> None:
        self.cluster_id = kafka_uuid()
        ports = [(free_port(), free_port()) for _ in range(n)]
        self.bootstrap = ",".join(f"127.0.0.1:{p}" for p, _ in ports)
        self.controller_bootstrap = ",".join(f"127.0.0.1:{c}" for _, c in ports)
        self.dir_ids = [kafka_uuid() for _ in range(n)]
        self.initial_controllers = ",".join(
            f"{i + 1}@127.0.0.1:{c}:{d}"
            for i, ((_, c), d) in enumerate(zip(ports, self.dir_ids, strict=True))
        )
        self.settings = base.model_copy(update={"kafka_bootstrap_servers": self.bootstrap})
        self.nodes = [
            ClusterNode(
                base.model_copy(
                    update={
                        "state_dir": root,
                        "kafka_port": p,
                        "kafka_controller_port": c,
                        "kafka_bootstrap_servers": f"127.0.0.1:{p}",
                    }
                ),
                i + 1,
                self,
            )
            for i, (p, c) in enumerate(ports)
        ]

    def up(self, timeout: float = 120) -> None:
        for node in self.nodes:
            node.dir.mkdir(parents=True, exist_ok=True)
            node.log.parent.mkdir(parents=True, exist_ok=True)
            node.prepare()
        fmts = [subprocess.Popen(n.format_cmd(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                for n in self.nodes]  # fmt: skip
        for f in fmts:
            out, _ = f.communicate(timeout=120)
            assert f.returncode == 0, out.decode(errors="replace")
        for node in self.nodes:
            node.start()
        self.wait_brokers(len(self.nodes), timeout)

    def wait_brokers(self, n: int, timeout: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=3)
                if len(md.brokers) >= n:
                    return time.monotonic() - t0
            except Exception:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{n} brokers not up within {timeout:.0f}s")

    def node(self, node_id: int) -> ClusterNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def down(self) -> None:
        for node in self.nodes:
            node.stop()

    def under_replicated(self, topics: Iterable[str]) -> int:
        md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=10)
        n = 0
        for t in topics:
            for p in md.topics[t].partitions.values():
                n += len(p.isrs) < len(p.replicas)
        return n
