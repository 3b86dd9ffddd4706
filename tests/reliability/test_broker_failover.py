"""Fault 2: one broker of a 3-node KRaft cluster (replication factor 3, min.insync.replicas=2
for every topic, the offsets and the transaction logs) is SIGKILLed mid-stream, then
restarted. The detector process and the producer carry on by themselves; nothing is lost or
duplicated compared with the uninterrupted reference run."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from detector_helpers import ProductionModel, caught_up, committed_offsets, detector_process
from detector_helpers import wait_until as wait
from reliability_helpers import (
    FeedingProducer,
    KRaftCluster,
    Reference,
    anomaly_keys,
    compare,
    detector_settings,
    fresh_topics,
    log_problems,
    record,
)

from iot_mlops.config import Settings

pytestmark = [pytest.mark.reliability, pytest.mark.integration]


@pytest.fixture
def cluster(stack_settings: Settings, tmp_path: Path) -> Iterator[KRaftCluster]:
    c = KRaftCluster(stack_settings, tmp_path / "cluster")
    try:
        t0 = time.monotonic()
        c.up()
        print(f"\n3-node KRaft cluster up in {time.monotonic() - t0:.1f}s at {c.bootstrap}")
        yield c
    finally:
        c.down()


def _group_coordinator(s: Settings) -> int:
    admin = AdminClient(s.kafka_common())
    desc = admin.describe_consumer_groups([s.consumer_group])[s.consumer_group].result(30)
    return desc.coordinator.id


def _done(s: Settings) -> int:
    return sum(max(0, o) for o in committed_offsets(s).values())


def test_broker_killed_and_restarted_mid_stream(
    cluster: KRaftCluster,
    production_model: ProductionModel,
    reference: Reference,
    tmp_path: Path,
) -> None:
    s = detector_settings(fresh_topics(cluster.settings, "fo", rf=3), production_model)
    total = len(reference.messages)
    feeder = FeedingProducer(s, reference.messages, seconds=40)
    log = tmp_path / "detector.log"
    proc = detector_process(s, log)
    try:
        # Mid-stream: once the detector has committed part of the stream.
        wait(lambda: _done(s) > total // 4, 240, "a quarter of the stream committed")
        # The hardest broker to lose: the one coordinating the detector's group (and,
        # with 6 partitions per internal topic spread over 3 nodes, likely transactions).
        victim = cluster.node(_group_coordinator(s))
        at = _done(s)
        t_kill = time.monotonic()
        victim.kill()
        print(f"killed broker {victim.node_id} (group coordinator) at {at}/{total} committed")
        # The detector carries on with two brokers (min ISR 2 still met).
        wait(lambda: _done(s) > at, 180, "progress with one broker down", every=0.2)
        progress_after_kill = time.monotonic() - t_kill
        time.sleep(3)
        t_restart = time.monotonic()
        victim.start()
        victim.wait_healthy(120)
        back = time.monotonic() - t_restart
        wait(
            lambda: cluster.under_replicated([s.input_topic, s.anomalies_topic]) == 0,
            120, "replicas back in sync", every=0.2,
        )  # fmt: skip
        in_sync = time.monotonic() - t_restart
        feeder.finish()
        wait(lambda: caught_up(s), 300, "detector caught up after the failover")
        drain = time.monotonic() - t_restart
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, log.read_text()[-3000:]
    tally = compare(reference.expected, anomaly_keys(s))
    problems = log_problems(log.read_text(errors="replace"))
    record(
        "broker_failover",
        {
            "brokers": 3,
            "broker_killed": victim.node_id,
            "committed_at_kill": at,
            "readings_in": total,
            "producer_delivered": feeder.delivered,
            "producer_failures": len(feeder.failed),
            "anomalies_expected": tally.expected,
            "anomalies_out": tally.published,
            "lost": len(tally.lost),
            "duplicated": len(tally.duplicated),
            "unexpected": len(tally.unexpected),
            "first_commit_after_kill_s": round(progress_after_kill, 2),
            "broker_restart_to_healthy_s": round(back, 2),
            "broker_restart_to_replicas_in_sync_s": round(in_sync, 2),
            "restart_to_caught_up_s": round(drain, 2),
            "detector_restarts": 0,
        },
    )
    tally.check()
    assert not problems, problems[:5]
