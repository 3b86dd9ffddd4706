"""``read_to_end`` with a fake consumer: where it stops and what it hands over."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from confluent_kafka import KafkaError, TopicPartition

from iot_mlops.errors import ServiceError
from iot_mlops.kafka.clients import read_to_end

pytestmark = pytest.mark.unit


@dataclass
class FakeMessage:
    t: str
    p: int
    off: int
    err: KafkaError | None = None

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.off

    def error(self) -> KafkaError | None:
        return self.err


class FakeConsumer:
    """Delivers the given rounds of messages, then nothing."""

    def __init__(self, rounds: list[list[FakeMessage]], positions: dict | None = None) -> None:
        self.rounds = list(rounds)
        self.positions = positions or {}

    def consume(self, _n: int, timeout: float) -> list[FakeMessage]:
        return self.rounds.pop(0) if self.rounds else []

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.positions.get(tp.partition, -1001))
            for tp in tps
        ]


def eof(p: int, off: int) -> FakeMessage:
    """What librdkafka delivers at the end it sees (the offset it reached)."""
    return FakeMessage("t", p, off, KafkaError(KafkaError._PARTITION_EOF))


def test_reads_each_partition_up_to_its_end() -> None:
    c = FakeConsumer([[FakeMessage("t", 0, 0), FakeMessage("t", 1, 0)],
                      [FakeMessage("t", 0, 1), FakeMessage("t", 0, 2), eof(1, 5)]])  # fmt: skip
    got: list[tuple[int, int]] = []
    left = read_to_end(c, {("t", 0): 2, ("t", 1): 5}, lambda m: got.append((m.p, m.off)))
    assert got == [(0, 0), (1, 0), (0, 1)]  # offset 2 of partition 0 is past its end
    assert left == set()


def test_a_handler_can_finish_its_partition_early() -> None:
    c = FakeConsumer([[FakeMessage("t", 0, 0), FakeMessage("t", 0, 1)]], positions={0: 2})
    got = []
    left = read_to_end(c, {("t", 0): 10}, lambda m: got.append(m.off) or False)
    assert got == [0] and left == set()


def test_an_end_short_of_the_snapshot_is_a_stall_not_the_end() -> None:
    # read_committed: EOF at the last stable offset (3), an open transaction before the
    # end (8) taken from the high watermark. Not done until it is resolved.
    c = FakeConsumer([[FakeMessage("t", 0, 2), eof(0, 3)], [], [FakeMessage("t", 0, 7)]])
    got = []
    assert read_to_end(c, {("t", 0): 8}, lambda m: got.append(m.off), poll_s=0.0) == set()
    assert got == [2, 7]
    stalled = FakeConsumer([[eof(0, 3)]])
    assert read_to_end(stalled, {("t", 0): 8}, lambda m: None, timeout_s=0.05) == {("t", 0)}


def test_position_past_the_end_finishes_a_partition_ending_in_a_marker() -> None:
    c = FakeConsumer([[FakeMessage("t", 0, 0)]], positions={0: 2})
    assert read_to_end(c, {("t", 0): 2}, lambda m: None) == set()


def test_idle_and_total_timeouts_return_the_unfinished_partitions() -> None:
    c = FakeConsumer([])
    left = read_to_end(c, {("t", 0): 3}, lambda m: None, idle_timeout_s=0.0, poll_s=0.0)
    assert left == {("t", 0)}
    left = read_to_end(FakeConsumer([]), {("t", 1): 3}, lambda m: None, timeout_s=0.05)
    assert left == {("t", 1)}


def test_fatal_errors_raise_what_the_caller_chose() -> None:
    fatal = KafkaError(KafkaError._FATAL, "boom", fatal=True)
    c = FakeConsumer([[FakeMessage("t", 0, -1, fatal)]])
    with pytest.raises(ServiceError, match="boom"):
        read_to_end(c, {("t", 0): 3}, lambda m: None, on_fatal=lambda e: ServiceError(str(e)))
