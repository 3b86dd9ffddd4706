"""Poison pills and abort loops (issue 13, items 1 and 6), injected for real on the broker.

- A ~1 MB message (the broker takes up to ~1 MiB) used to kill `iot-mlops detect`: its dead
  letter copied the whole value plus headers and ``produce()`` refused it
  (``MSG_SIZE_TOO_LARGE``, not abortable), on every restart, on the same offset.
- A dead letter the *broker* refuses (a DLQ topic with a smaller ``max.message.bytes``)
  aborted the batch's transaction, and the redone batch failed the same way forever.
- While a batch keeps aborting, the readings of every failed attempt were counted again.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic
from detector_helpers import (
    ProductionModel,
    RunningDetector,
    caught_up,
    detector_process,
    end_offsets,
    read_all,
    stop_detector,
    wait_until,
)
from reliability_helpers import metric_sum, scrape, stream

from iot_mlops.config import Settings
from iot_mlops.kafka import clients

POISON_BYTES = 999_950


def _poison() -> bytes:
    head, tail = b'{"device_id": "pump-000", "pad": "', b'"}'
    return head + b"x" * (POISON_BYTES - len(head) - len(tail)) + tail


def _produce(s: Settings, msgs: list[tuple[bytes | None, bytes]], partition: int = -1) -> None:
    # message.max.bytes above the client's 1,000,000 default, so the poison reaches the broker.
    p = Producer({**s.kafka_common(), "linger.ms": 5, "message.max.bytes": 1_048_000})
    for key, value in msgs:
        p.produce(s.input_topic, value, key=key, partition=partition)
    assert p.flush(60) == 0


def _dlq_with_limit(s: Settings, max_message_bytes: int) -> Settings:
    """``s`` with a fresh DLQ topic whose broker-side message limit is ``max_message_bytes``."""
    name = f"{s.input_topic}.dlq-small-{uuid.uuid4().hex[:6]}"
    topic = NewTopic(name, 3, 1, config={"max.message.bytes": str(max_message_bytes)})
    admin = clients.admin(s)  # kept alive until the futures resolve
    for fut in admin.create_topics([topic], operation_timeout=30).values():
        fut.result(timeout=60)
    return s.model_copy(update={"dlq_topic": name})


def _readings_counted(det: RunningDetector) -> float:
    reg = det.detector.metrics.registry
    return sum(
        smp.value
        for fam in reg.collect()
        if fam.name == "iot_readings"
        for smp in fam.samples
        if smp.name == "iot_readings_total"
    )


def test_a_megabyte_message_is_dead_lettered_cut_and_detect_survives(
    det_settings: Settings, production_model: ProductionModel, tmp_path: Path
) -> None:
    s = det_settings
    before, after = stream(production_model, -100, 20), stream(production_model, -80, 20)
    _produce(s, before)
    poison_offset = end_offsets(s, s.input_topic).get(0, 0)
    _produce(s, [(b"pump-000", _poison())], partition=0)
    _produce(s, after)
    log = tmp_path / "detector.log"
    proc = detector_process(s, log)
    try:
        wait_until(lambda: proc.poll() is not None or caught_up(s), 240, "input consumed")
        assert proc.poll() is None, "detect exited:\n" + log.read_text(errors="replace")[-3000:]
        m = scrape(s.metrics_port)
    finally:
        if proc.poll() is None:
            text = stop_detector(proc, log)
    assert text.count("consuming ") == 1, "the detector started more than once"
    (dl,) = read_all(s, s.dlq_topic, timeout=60)
    h = dict(dl.headers())
    assert h["reason"] == b"oversized" and h["truncated"] == b"true"
    assert h["original.value.size"] == str(POISON_BYTES).encode()
    assert h["source.partition"] == b"0" and int(h["source.offset"]) == poison_offset
    assert dl.value() == _poison()[: s.dlq_max_value_bytes]
    assert metric_sum(m, "iot_dead_letter_truncated_total", reason="oversized") == 1
    assert metric_sum(m, "iot_readings_total") == len(before) + len(after)


def test_a_dead_letter_the_broker_refuses_is_replaced_and_the_batch_counted_once(
    det_settings: Settings, production_model: ProductionModel
) -> None:
    # The DLQ takes 20,000 bytes at most: a 30,000-byte message's dead letter (under the
    # 64 KiB cut) passes the client and is refused by the broker, aborting the transaction.
    s = _dlq_with_limit(det_settings, 20_000)
    valid = stream(production_model, -100, 20)
    big = b'{"device_id": "pump-000", "pad": "' + b"y" * 30_000 + b'"}'
    _produce(s, valid[:150])
    _produce(s, [(b"pump-000", big)], partition=1)
    _produce(s, valid[150:])
    det = RunningDetector(s)
    try:
        wait_until(lambda: det.error is not None or caught_up(s), 240, "input consumed")
    finally:
        det.stop()
    m = det.metric
    assert m("iot_transactions_total", result="aborted") >= 1, "the fault did not happen"
    (dl,) = read_all(s, s.dlq_topic, timeout=60)
    h = dict(dl.headers())
    assert dl.value() is None and h["reason"] == b"oversized"
    assert h["unpublishable"].startswith(b"MSG_SIZE_TOO_LARGE")
    assert h["original.value.size"] == str(len(big)).encode()
    assert h["source.partition"] == b"1" and h["target.topic"] == s.dlq_topic.encode()
    assert m("iot_unpublishable_records_total", output="dlq") == 1
    assert m("iot_dead_letters_total", reason="oversized") == 1
    # The aborted attempt counted nothing: every reading exactly once.
    assert _readings_counted(det) == len(valid)
