"""``read_topic`` on the real broker: "every committed message up to the end now" must not stop
short at an open transaction (a producer killed or replaced mid-transaction) and return the
messages before it as if they were all."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from iot_mlops.config import Settings
from iot_mlops.errors import ServiceError
from iot_mlops.kafka import clients

pytestmark = pytest.mark.integration


def _committed(settings: Settings, topic: str, value: bytes, n: int, tid: str) -> None:
    p = clients.producer(settings, **{"transactional.id": tid})
    p.init_transactions(60)
    p.begin_transaction()
    for _ in range(n):
        p.produce(topic, value, partition=0)
    p.commit_transaction(60)


def test_a_read_waits_out_an_open_transaction_instead_of_stopping_at_it(
    stack_settings: Settings, topic_factory: Callable[..., str]
) -> None:
    s = stack_settings
    topic = topic_factory("open-txn", partitions=1)
    _committed(s, topic, b"before", 5, f"{topic}-b1")
    # A producer that dies mid-transaction: the broker aborts it after its timeout.
    hanging = clients.producer(
        s, **{"transactional.id": f"{topic}-hang", "transaction.timeout.ms": 2000}
    )
    hanging.init_transactions(60)
    hanging.begin_transaction()
    for _ in range(3):
        hanging.produce(topic, b"hanging", partition=0)
    assert hanging.flush(30) == 0
    _committed(s, topic, b"after", 7, f"{topic}-b2")

    # While it is open, a short read fails loudly (it used to return the 5 "before").
    with pytest.raises(ServiceError, match="transaction still open"):
        clients.read_topic(s, topic, timeout_s=2)
    t0 = time.monotonic()
    got = [m.value() for m in clients.read_topic(s, topic, timeout_s=120)]
    assert got == [b"before"] * 5 + [b"after"] * 7, got
    print(f"open transaction resolved by the broker after {time.monotonic() - t0:.1f}s")
