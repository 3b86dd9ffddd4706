"""The detector's transactional.id: stable per named replica, unique otherwise (pure)."""

from __future__ import annotations

import socket

import pytest

from iot_mlops.config import Settings
from iot_mlops.detector.transaction import transactional_id

pytestmark = pytest.mark.unit


def test_a_named_replica_keeps_its_id_and_unnamed_ones_differ() -> None:
    named = Settings(consumer_group="g", instance_id="replica-a")
    assert transactional_id(named) == transactional_id(named) == "g-replica-a"
    anonymous = Settings(consumer_group="g")
    assert transactional_id(anonymous) != transactional_id(anonymous)


def test_the_host_name_names_a_replica_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose's replicas: the container id is the host name, stable across restarts."""
    monkeypatch.setattr(socket, "gethostname", lambda: "3f2a9c81d0e4")
    s = Settings(consumer_group="g", instance_id_from_hostname=True)
    assert transactional_id(s) == transactional_id(s) == "g-3f2a9c81d0e4"
    monkeypatch.setattr(socket, "gethostname", lambda: "odd host/name")
    assert transactional_id(s) == "g-odd-host-name"  # only the characters Kafka ids keep
    explicit = Settings(consumer_group="g", instance_id="x", instance_id_from_hostname=True)
    assert transactional_id(explicit) == "g-x"  # an explicit name wins
