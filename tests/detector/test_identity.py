"""The replica's stable identity (static membership, transactional id) and its liveness and
readiness endpoints, without Kafka: the client configurations are captured."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from prometheus_client import CollectorRegistry

from iot_mlops.config import Settings
from iot_mlops.detector import runner, transaction
from iot_mlops.detector.http import serve
from iot_mlops.detector.metrics import DetectorMetrics
from iot_mlops.kafka.stack import free_port

pytestmark = pytest.mark.unit


def test_ids_are_group_dash_replica_and_default_to_the_hostname(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("IOT_MLOPS_REPLICA_ID", raising=False)
    monkeypatch.setenv("IOT_MLOPS_CONSUMER_GROUP", "grp")
    monkeypatch.setattr(socket, "gethostname", lambda: "detector-7f3a")
    s = Settings()
    assert s.replica() == "detector-7f3a"
    assert s.group_instance_id() == s.transactional_id() == "grp-detector-7f3a"
    monkeypatch.setenv("IOT_MLOPS_REPLICA_ID", "r1")
    s = Settings()
    assert s.replica() == "r1"
    assert s.group_instance_id() == s.transactional_id() == "grp-r1"
    # Kafka's group.instance.id takes [A-Za-z0-9._-] only.
    monkeypatch.setenv("IOT_MLOPS_REPLICA_ID", "a/b")
    with pytest.raises(ValueError):
        Settings()


class FakeProducer:
    def __init__(self, config: dict) -> None:
        self.config, self.calls = config, []

    def init_transactions(self, _timeout: float) -> None:
        self.calls.append("init")

    def purge(self) -> None:
        self.calls.append("purge")

    def flush(self, timeout: float) -> int:
        self.calls.append(f"flush({timeout:g})")
        return 0


def test_consumer_is_static_and_every_producer_reuses_the_transactional_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[FakeProducer] = []
    consumers: list[dict] = []

    def producer(_s: Settings, **config: object) -> FakeProducer:
        made.append(FakeProducer(config))
        return made[-1]

    monkeypatch.setattr(transaction.clients, "producer", producer)
    monkeypatch.setattr(
        runner.clients, "consumer", lambda _s, group, **c: consumers.append({"group": group, **c})
    )
    s = Settings(consumer_group="grp", replica_id="r1")
    runner.Detector(s)._new_consumer()
    assert consumers[0]["group.instance.id"] == "grp-r1"

    tx = transaction.Transactions(s, DetectorMetrics(), None, set(), lambda _c: None)  # type: ignore[arg-type]
    first = tx.producer
    tx._replace_producer()
    assert tx.producer is not first and tx.replaced_producers == 1
    assert [p.config["transactional.id"] for p in made] == ["grp-r1", "grp-r1"]
    # The old producer is released (purged, flushed with a timeout), after the new one has
    # initialised its transactions (which fences the old one).
    assert first.calls == ["init", "purge", f"flush({transaction.OLD_PRODUCER_FLUSH_S:g})"]
    assert made[1].calls == ["init"]


def test_livez_and_readyz_answer_from_the_probe() -> None:
    state = {"alive": True, "ready": False}
    port = free_port()
    server = serve("127.0.0.1", port, CollectorRegistry(), lambda: dict(state))
    try:
        get = lambda path: httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)  # noqa: E731
        assert get("/livez").status_code == 200
        assert get("/readyz").status_code == 503
        assert get("/healthz").status_code == 503  # kept: an alias of /readyz
        state["ready"] = True
        assert get("/readyz").status_code == get("/healthz").status_code == 200
        state["alive"] = False
        assert get("/livez").status_code == 503
        assert get("/nope").status_code == 404
    finally:
        server.shutdown()


def test_detector_is_alive_while_its_loop_comes_round() -> None:
    det = runner.Detector(Settings(replica_id="r1"))
    assert not det.alive(60)  # not running
    det.heartbeat = time.monotonic()
    assert det.alive(60) and not det.ready()  # alive, not ready: no model, no partitions
    det.heartbeat = time.monotonic() - 61
    assert not det.alive(60)
