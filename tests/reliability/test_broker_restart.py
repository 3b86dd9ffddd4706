"""Fault 3: the only broker of a single-node Kafka (its own, not the session's) is stopped
and started again while the stream flows. The detector process reconnects and resumes by
itself, without a restart, and the backlog drains; nothing is lost or duplicated."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from detector_helpers import ProductionModel, caught_up, committed_offsets, detector_process
from detector_helpers import wait_until as wait
from reliability_helpers import (
    FeedingProducer,
    Reference,
    anomaly_keys,
    compare,
    detector_settings,
    fresh_topics,
    log_problems,
    record,
)

from iot_mlops.config import Settings
from iot_mlops.kafka.stack import Kafka, free_port

pytestmark = [pytest.mark.reliability, pytest.mark.integration]


@pytest.fixture
def broker(stack_settings: Settings, tmp_path: Path) -> Iterator[Kafka]:
    port = free_port()
    k = Kafka(
        stack_settings.model_copy(
            update={
                "state_dir": tmp_path / "single",
                "kafka_port": port,
                "kafka_controller_port": free_port(),
                "kafka_bootstrap_servers": f"127.0.0.1:{port}",
            }
        )
    )
    try:
        k.start()
        k.wait_healthy(90)
        yield k
    finally:
        k.stop()


def _done(s: Settings) -> int:
    return sum(max(0, o) for o in committed_offsets(s).values())


def test_single_broker_stop_and_start(
    broker: Kafka, production_model: ProductionModel, reference: Reference, tmp_path: Path
) -> None:
    s = detector_settings(fresh_topics(broker.s, "rs"), production_model)
    total = len(reference.messages)
    feeder = FeedingProducer(s, reference.messages, seconds=30)
    log = tmp_path / "detector.log"
    proc = detector_process(s, log)
    pid = proc.pid
    try:
        wait(lambda: _done(s) > total // 4, 240, "a quarter of the stream committed")
        at = _done(s)
        t_stop = time.monotonic()
        assert broker.stop()  # SIGTERM: a controlled shutdown, as an operator restart does
        stopped = time.monotonic() - t_stop
        time.sleep(5)  # the producer keeps producing into its buffer meanwhile
        t_start = time.monotonic()
        broker.start()
        broker.wait_healthy(90)
        broker_up = time.monotonic() - t_start
        wait(lambda: _done(s) > at, 180, "progress after the broker returned", every=0.2)
        resumed = time.monotonic() - t_start
        feeder.finish()
        wait(lambda: caught_up(s), 300, "backlog drained")
        drained = time.monotonic() - t_start
        assert proc.poll() is None and proc.pid == pid, "the detector exited"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, log.read_text()[-3000:]
    tally = compare(reference.expected, anomaly_keys(s))
    problems = log_problems(log.read_text(errors="replace"))
    record(
        "broker_restart_single_node",
        {
            "committed_at_stop": at,
            "readings_in": total,
            "producer_delivered": feeder.delivered,
            "producer_failures": len(feeder.failed),
            "anomalies_expected": tally.expected,
            "anomalies_out": tally.published,
            "lost": len(tally.lost),
            "duplicated": len(tally.duplicated),
            "unexpected": len(tally.unexpected),
            "broker_stop_s": round(stopped, 2),
            "broker_down_s": round(t_start - t_stop, 2),
            "broker_start_to_healthy_s": round(broker_up, 2),
            "broker_start_to_first_commit_s": round(resumed, 2),
            "broker_start_to_backlog_drained_s": round(drained, 2),
            "detector_restarts": 0,
        },
    )
    tally.check()
    assert not problems, problems[:5]
