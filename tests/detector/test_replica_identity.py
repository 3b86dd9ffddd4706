"""A replica's stable identity and its liveness on the real broker, with real detector
processes (issue 13, item 7): a SIGKILLed replica restarted under the same id fences its
predecessor's open transaction at once, and a spare replica is alive but not ready."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from confluent_kafka import TopicPartition
from detector_helpers import (
    ProductionModel,
    caught_up,
    detector_process,
    detector_settings,
    produce_frame,
    stop_detector,
    wait_until,
)

from iot_mlops.config import Settings
from iot_mlops.data.simulate import generate
from iot_mlops.kafka import clients
from iot_mlops.kafka.stack import free_port
from iot_mlops.kafka.topics import create_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Far longer than the test's own deadlines: the broker would release a killed producer's
# open transaction only after this (its transaction.max.timeout.ms default is 15 min).
TXN_TIMEOUT_MS = 600_000
DEADLINE_S = 150  # < TXN_TIMEOUT_MS / 1000


def live_frame(pm: ProductionModel, start_step: int, steps: int):
    start = pm.end_ms + start_step * pm.interval_s * 1000
    return generate(pm.fleet, start, steps, pm.interval_s, pm.seed)


def one_partition_settings(
    stack_settings: Settings, pm: ProductionModel, scores: bool = True
) -> Settings:
    base = f"rid-{uuid.uuid4().hex[:10]}"
    topics = [base, f"{base}.anomalies", f"{base}.dlq"] + ([f"{base}.scores"] if scores else [])
    create_topics(stack_settings, dict.fromkeys(topics, 1))
    s = stack_settings.model_copy(
        update={
            "input_topic": base,
            "anomalies_topic": f"{base}.anomalies",
            "dlq_topic": f"{base}.dlq",
            "scores_topic": f"{base}.scores" if scores else "",
            "consumer_group": f"grp-{base}",
        }
    )
    return detector_settings(s, pm)


def stable_offset(s: Settings, topic: str) -> Callable[[], tuple[int, int]]:
    """(last stable offset, high watermark) of partition 0 of ``topic``: the first is what a
    read_committed reader can read up to, the second includes open transactions."""
    committed = clients.consumer(s, f"probe-{uuid.uuid4().hex}", quiet=True, **{
        "isolation.level": "read_committed"})  # fmt: skip
    raw = clients.consumer(s, f"probe-{uuid.uuid4().hex}", quiet=True, **{
        "isolation.level": "read_uncommitted"})  # fmt: skip

    def offsets() -> tuple[int, int]:

        tp = TopicPartition(topic, 0)
        return (
            committed.get_watermark_offsets(tp, timeout=10)[1],
            raw.get_watermark_offsets(tp, timeout=10)[1],
        )

    return offsets


def freeze_inside_a_transaction(proc: subprocess.Popen, offsets: Callable, tries: int = 200):
    """SIGSTOP the detector at random moments until it is stopped with a transaction open on
    the broker (records written, no commit marker: stable offset < high watermark, and still
    so a second later); returns (stable offset, high watermark) then."""
    rng = random.Random(13)
    for _ in range(tries):
        time.sleep(rng.uniform(0.02, 0.4))
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(1.0)
        lso, hw = offsets()
        if 0 < lso < hw:
            time.sleep(1.0)
            if offsets() == (lso, hw):
                return lso, hw
        os.kill(proc.pid, signal.SIGCONT)
    raise AssertionError("never caught the detector with a transaction open")


def first_committed_at_or_after(s: Settings, topic: str, offset: int, timeout: float) -> int:
    """The offset of the first record a read_committed reader gets at or after ``offset``."""
    from confluent_kafka import TopicPartition

    c = clients.reader(s, "first-after")
    try:
        c.assign([TopicPartition(topic, 0, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                return msg.offset()
        raise AssertionError(f"no committed record at or after {offset} within {timeout:.0f}s")
    finally:
        c.close()


def test_a_restarted_replica_fences_its_killed_predecessors_open_transaction(
    stack_settings: Settings, production_model: ProductionModel, tmp_path: Path
) -> None:
    s = one_partition_settings(stack_settings, production_model)
    produce_frame(s, live_frame(production_model, -200, 800))
    env = {
        "IOT_MLOPS_REPLICA_ID": "replica-0",
        "IOT_MLOPS_SCORES_TOPIC": s.scores_topic,
        "IOT_MLOPS_TRANSACTION_TIMEOUT_MS": str(TXN_TIMEOUT_MS),
        # Small batches: many transactions, so the random stops below soon catch one open.
        "IOT_MLOPS_BATCH_MAX_MESSAGES": "50",
    }
    log = tmp_path / "detector.log"
    proc = detector_process(s, log, **env)
    try:
        offsets = stable_offset(s, s.scores_topic)
        wait_until(lambda: offsets()[0] > 0, 180, "the first batch committed")
        lso, hw = freeze_inside_a_transaction(proc, offsets)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        time.sleep(2.0)
        assert offsets() == (lso, hw), "the killed replica's transaction was not left open"
        # Same replica id: its producer's init_transactions fences the dead one's, and the
        # broker aborts that transaction now. With a new id per process, read_committed
        # readers would see nothing past `lso` for TXN_TIMEOUT_MS (10 minutes).
        t0 = time.monotonic()
        proc = detector_process(s, log, **env)
        first = first_committed_at_or_after(s, s.scores_topic, hw, DEADLINE_S)
        print(
            f"restart to first committed output {time.monotonic() - t0:.1f}s (transaction "
            f"timeout {TXN_TIMEOUT_MS / 1000:.0f}s); open transaction held {hw - lso} records"
        )
        assert first >= hw  # the successor's output, readable while the timeout still runs
        assert offsets()[0] > hw
        wait_until(lambda: caught_up(s), DEADLINE_S, "the successor caught up")
        text = stop_detector(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "replica replica-0" in text


def test_a_spare_replica_is_alive_but_not_ready(
    stack_settings: Settings, production_model: ProductionModel, tmp_path: Path
) -> None:
    s = one_partition_settings(stack_settings, production_model, scores=False)
    produce_frame(s, live_frame(production_model, -200, 100))
    ports = [free_port(), free_port()]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [detector_process(s, logs[i], IOT_MLOPS_METRICS_PORT=str(ports[i])) for i in range(2)]

    def status(port: int, path: str) -> int | None:
        try:
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code
        except httpx.HTTPError:
            return None

    try:
        wait_until(
            lambda: sorted(status(p, "/readyz") or 0 for p in ports) == [200, 503], 180,
            "one detector ready, the other not",
        )  # fmt: skip
        owner, spare = sorted(ports, key=lambda p: status(p, "/readyz") != 200)
        wait_until(lambda: caught_up(s), 120, "the owner caught up")
        # Several probes over a few seconds: the spare stays alive and unready.
        for _ in range(5):
            assert status(spare, "/livez") == 200
            assert status(spare, "/readyz") == status(spare, "/healthz") == 503
            assert status(owner, "/livez") == status(owner, "/readyz") == 200
            time.sleep(1.0)
        body = httpx.get(f"http://127.0.0.1:{spare}/readyz", timeout=2).json()
        assert body["alive"] and body["model_loaded"] and body["partitions"] == []
        for proc, log in zip(procs, logs, strict=True):
            stop_detector(proc, log)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
