"""Producing one batch's records, so that no single record can stop the stream.

A record the broker or the client refuses for good (too large, invalid) would fail every
retry of its batch: as a synchronous ``produce()`` error it crashed the detector on the same
offset after every restart; as a failed delivery it aborted the transaction, and the redone
batch failed again, forever. Such a record is replaced by a minimal dead letter naming the
target topic and the error (nothing is dropped silently), so the batch can commit:

- refused by the client at ``produce()``: replaced at once;
- refused by the broker (a failed delivery aborts the transaction): the record's digest is
  remembered, and when the batch is redone from the committed offsets the same record is
  replaced.

If the minimal dead letter is refused too, nothing safe is left to do: the error propagates
(synchronous) or the batch keeps aborting (its input stays uncommitted, nothing is lost).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer

log = logging.getLogger("iot_mlops.detector")

# Errors that belong to one record, whatever the retry: the record itself must change.
PERMANENT_RECORD_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_MSG,
    }
)
# Digests remembered at most (records refused between an abort and its redo: a handful).
MAX_REMEMBERED = 10_000


@dataclass(frozen=True)
class Outgoing:
    """One record to produce; ``output`` is its role (anomalies | scores | dlq)."""

    output: str
    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    replacement: bool = False  # a minimal dead letter standing in for a refused record


def digest(topic: str, key: bytes | None, value: bytes | None) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in (topic.encode(), key or b"", value or b""):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


def replacement(rec: Outgoing, err: KafkaError, dlq_topic: str, max_key: int) -> Outgoing:
    """The minimal dead letter for a refused record: no value, a bounded key, and headers
    naming the target, the error and the original sizes (plus a dead letter's own reason and
    source position)."""
    own = [(k, v) for k, v in rec.headers if k in ("reason", "source.topic", "source.partition",
                                                   "source.offset")]  # fmt: skip
    headers = (
        *(own or [("reason", b"unpublishable")]),
        ("unpublishable", f"{err.name()}: {err.str()}"[:500].encode("utf-8", "replace")),
        ("target.topic", rec.topic.encode()),
        ("original.value.size", str(len(rec.value or b"")).encode()),
        ("original.key.size", str(len(rec.key or b"")).encode()),
    )
    key = rec.key if rec.key is None or len(rec.key) <= max_key else rec.key[:max_key]
    return Outgoing(rec.output, dlq_topic, key, None, headers, replacement=True)


class Publisher:
    """Produces records into the open transaction, replacing those refused for good."""

    def __init__(self, dlq_topic: str, max_key: int) -> None:
        self.dlq_topic, self.max_key = dlq_topic, max_key
        self.refused: dict[bytes, KafkaError] = {}  # digest → the broker's error
        self.replaced: list[str] = []  # outputs replaced in the current transaction

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """Delivery report (errors only): remember records the broker refused for good."""
        if err is None or err.code() not in PERMANENT_RECORD_ERRORS:
            return
        if len(self.refused) >= MAX_REMEMBERED:
            self.refused.clear()
        self.refused[digest(msg.topic(), msg.key(), msg.value())] = err
        log.error("the broker refused a record for %s for good (%s)", msg.topic(), err)

    def begin(self) -> None:
        self.replaced = []

    def produce(self, p: Producer, rec: Outgoing) -> None:
        if not rec.replacement and self.refused:  # no digest per record while none was refused
            err = self.refused.get(digest(rec.topic, rec.key, rec.value))
            if err is not None:
                rec = self._replace(rec, err)
        while True:
            try:
                p.produce(rec.topic, value=rec.value, key=rec.key, headers=list(rec.headers))
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                p.poll(0.1)
            except KafkaException as e:
                err = e.args[0]
                if rec.replacement or err.code() not in PERMANENT_RECORD_ERRORS:
                    raise
                rec = self._replace(rec, err)

    def _replace(self, rec: Outgoing, err: KafkaError) -> Outgoing:
        log.error(
            "a record for %s (%d bytes) cannot be published (%s); a minimal dead letter "
            "naming it goes to %s instead", rec.topic, len(rec.value or b""), err, self.dlq_topic,
        )  # fmt: skip
        self.replaced.append(rec.output)
        return replacement(rec, err, self.dlq_topic, self.max_key)
