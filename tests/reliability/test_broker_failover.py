"""Fault 2: one broker of a 3-node KRaft cluster (replication factor 3, min.insync.replicas=2
for every topic, the offsets and the transaction logs) is SIGKILLed mid-stream, then
restarted. The detector process and the producer carry on by themselves; nothing is lost or
duplicated compared with the uninterrupted reference run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from detector_helpers import ProductionModel, detector_settings
from detector_helpers import wait_until as wait
from reliability_helpers import (
    KRaftCluster,
    Reference,
    fault_run,
    fresh_topics,
    record,
)

from iot_mlops.config import Settings


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


def test_broker_killed_and_restarted_mid_stream(
    cluster: KRaftCluster,
    production_model: ProductionModel,
    reference: Reference,
    tmp_path: Path,
) -> None:
    s = detector_settings(fresh_topics(cluster.settings, "fo", rf=3), production_model)
    with fault_run(s, reference, tmp_path, feed_seconds=40) as run:
        # Mid-stream: once the detector has committed part of the stream.
        run.wait_done(run.total // 4, 240, "a quarter of the stream committed")
        # The hardest broker to lose: the one coordinating the detector's group (and,
        # with 6 partitions per internal topic spread over 3 nodes, likely transactions).
        victim = cluster.node(_group_coordinator(s))
        at = run.done()
        t_kill = time.monotonic()
        victim.kill()
        print(f"killed broker {victim.node_id} (group coordinator) at {at}/{run.total} committed")
        # The detector carries on with two brokers (min ISR 2 still met).
        run.wait_done(at, 180, "progress with one broker down", every=0.2)
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
        run.drain("detector caught up after the failover")
        drain = time.monotonic() - t_restart
        result = run.stop()
    record(
        "broker_failover",
        {
            **result.figures,
            "brokers": 3,
            "broker_killed": victim.node_id,
            "committed_at_kill": at,
            "first_commit_after_kill_s": round(progress_after_kill, 2),
            "broker_restart_to_healthy_s": round(back, 2),
            "broker_restart_to_replicas_in_sync_s": round(in_sync, 2),
            "restart_to_caught_up_s": round(drain, 2),
            "detector_restarts": 0,
        },
    )
    result.check()
