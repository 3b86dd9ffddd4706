"""Fault 4: a hostile producer. A seeded generator writes more than 10,000 malformed messages
(garbage bytes, oversized payloads, deep JSON, wrong types, NaN/inf, missing keys, absurd
timestamps, unicode ids including invalid surrogates, nulls, empty messages) interleaved with
valid readings. Every malformed one lands in the DLQ with its reason, every valid one is
consumed and counted by the detector, and the detector process never restarts."""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from detector_helpers import ProductionModel, caught_up, detector_process, read_all, wait_until
from reliability_helpers import healthz, log_problems, metric_sum, record, scrape, stream

from iot_mlops.config import Settings
from iot_mlops.events import REASONS, ReadingError, decode_reading

SEED = 4
N_MALFORMED = 10_000

TYPES = ["pump", "valve", "motor"]
METRICS = ["temperature", "pressure", "vibration"]


def _ts(rng: random.Random) -> str:
    return f"2026-11-26T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00.000Z"


def _good(rng: random.Random) -> dict:
    return {
        "device_id": f"hostile-{rng.randrange(50)}",
        "device_type": rng.choice(TYPES),
        "metric_name": rng.choice(METRICS),
        "metric_value": rng.uniform(-100, 100),
        "timestamp": _ts(rng),
    }


def _unicode_id(rng: random.Random) -> str:
    alphabet = "泵阀电机ß∑😀\u200b\u202eé\u0301ǅ" + "abc-"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 20)))


def _malformed(rng: random.Random) -> tuple[str, bytes | None]:
    """(category, value) of one message meant to be refused."""
    kind = rng.choice(
        [
            "garbage", "huge", "deep", "wrong_type", "non_finite", "missing", "absurd_ts",
            "surrogate", "null_field", "empty", "tombstone", "not_object", "blank_id",
            "long_id", "bad_utf8",
        ]
    )  # fmt: skip
    d = _good(rng)
    if kind == "garbage":
        return kind, rng.randbytes(rng.randrange(1, 400))
    if kind == "huge":
        d["pad"] = "x" * rng.randrange(17_000, 120_000)
        return kind, json.dumps(d).encode()
    if kind == "deep":
        depth = rng.choice([300, 2_000, 20_000])
        if rng.random() < 0.5:
            return kind, b"[" * depth + b"]" * depth
        return kind, (b'{"a":' * depth + b"1" + b"}" * depth)
    if kind == "wrong_type":
        field = rng.choice(["device_id", "device_type", "metric_name", "metric_value"])
        d[field] = rng.choice([[1, 2], {"x": 1}, True, 42 if field != "metric_value" else "42"])
        return kind, json.dumps(d).encode()
    if kind == "non_finite":
        v = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
        body = json.dumps({**d, "metric_value": 0}).replace(
            '"metric_value": 0', f'"metric_value": {v}'
        )
        return kind, body.encode()
    if kind == "missing":
        for k in rng.sample(sorted(d), rng.randrange(1, 5)):
            del d[k]
        return kind, json.dumps(d).encode()
    if kind == "absurd_ts":
        d["timestamp"] = rng.choice(
            [
                "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
                "2026-11-26T04:00:00", "2026-13-45T99:99:99Z", "yesterday", "",
                "2" * 200, 1_795_000_000_000, None, "+275760-09-13T00:00:00Z",
            ]
        )  # fmt: skip
        return kind, json.dumps(d).encode()
    if kind == "surrogate":
        field = rng.choice(["device_id", "device_type", "metric_name"])
        d[field] = "pump-" + rng.choice(["\ud800", "\udfff", "\udc00x", "\ud83d"])
        return kind, json.dumps(d).encode()  # json escapes them as \\udXXX
    if kind == "null_field":
        d[rng.choice(sorted(d))] = None
        return kind, json.dumps(d).encode()
    if kind == "empty":
        return kind, rng.choice([b"", b" ", b"\n", b"{", b"null"])
    if kind == "tombstone":
        return kind, None
    if kind == "not_object":
        return kind, json.dumps(rng.choice([[d], "reading", 3.5, True, []])).encode()
    if kind == "blank_id":
        d[rng.choice(["device_id", "device_type", "metric_name"])] = rng.choice(["", "  ", "\t"])
        return kind, json.dumps(d).encode()
    if kind == "long_id":
        d["device_id"] = "p" * rng.randrange(257, 5000)
        return kind, json.dumps(d).encode()
    # bad_utf8: a valid-looking reading with invalid UTF-8 bytes in an id
    return kind, json.dumps(d).encode().replace(b"hostile-", b"hostile-\xff\xfe", 1)


def _valid_unicode(rng: random.Random) -> bytes:
    d = _good(rng)
    d["device_id"] = _unicode_id(rng)
    return json.dumps(d, ensure_ascii=rng.random() < 0.5).encode()


def hostile_stream(
    valid: list[tuple[bytes, bytes]], seed: int
) -> Iterator[tuple[bytes | None, bytes | None, str]]:
    """(key, value, category) in order: the valid readings with malformed ones in between."""
    rng = random.Random(seed)
    per_valid = N_MALFORMED / len(valid)
    owed = 0.0
    for key, value in valid:
        owed += per_valid
        while owed >= 1:
            owed -= 1
            kind, bad = _malformed(rng)
            k = rng.choice([None, b"", rng.randbytes(8), key])
            yield k, bad, kind
            if rng.random() < 0.02:
                yield _unicode_id(rng).encode(), _valid_unicode(rng), "valid_unicode"
        yield key, value, "valid"


def _expect(value: bytes | None, max_bytes: int) -> str:
    try:
        decode_reading(value, max_bytes)
    except ReadingError as e:
        return e.reason
    return "valid"


def test_hostile_stream_goes_to_the_dlq_and_the_detector_survives(
    det_settings: Settings, production_model: ProductionModel, tmp_path: Path
) -> None:
    s = det_settings
    valid = stream(production_model, -200, 200)  # 3,000 fleet readings, scored after warm-up
    msgs = list(hostile_stream(valid, SEED))
    outcome = Counter(_expect(v, s.max_message_bytes) for _k, v, _c in msgs)
    by_kind = Counter(c for _k, _v, c in msgs)
    n_valid = outcome.pop("valid")
    n_malformed = sum(outcome.values())
    # The generator's categories: every malformed category is refused, each valid one is not.
    for _k, v, c in msgs:
        got = _expect(v, s.max_message_bytes)
        assert (got == "valid") == c.startswith("valid"), (c, v[:120] if v else v, got)
    assert n_malformed >= N_MALFORMED and set(outcome) <= set(REASONS)
    print(f"\nhostile stream: {n_malformed} malformed {dict(outcome)}, {n_valid} valid")

    p = Producer({**s.kafka_common(), "linger.ms": 20, "message.max.bytes": 1_000_000})
    for i, (key, value, _c) in enumerate(msgs):
        p.produce(s.input_topic, value, key=key)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0

    log = tmp_path / "detector.log"
    t0 = time.monotonic()
    proc = detector_process(s, log)
    pid = proc.pid
    try:
        wait_until(lambda: caught_up(s), 300, "hostile stream consumed")
        elapsed = time.monotonic() - t0
        assert healthz(s.metrics_port) == 200
        m = scrape(s.metrics_port)
        assert m, "/metrics did not answer"
        assert proc.poll() is None and proc.pid == pid, "the detector exited"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(errors="replace")
    assert rc == 0, text[-3000:]
    assert text.count("consuming ") == 1, "the detector started more than once"

    dlq = read_all(s, s.dlq_topic, timeout=120)
    dlq_reasons = Counter(dict(x.headers())["reason"].decode() for x in dlq)
    metric_reasons = {r: metric_sum(m, "iot_dead_letters_total", reason=r) for r in outcome}
    counted = metric_sum(m, "iot_readings_total")
    scored = metric_sum(m, "iot_readings_total", outcome="scored")
    problems = log_problems(text)
    record(
        "hostile_input",
        {
            "malformed_tried": n_malformed,
            "malformed_by_reason": dict(sorted(outcome.items())),
            "generator_categories": dict(sorted(by_kind.items())),
            "valid_in": n_valid,
            "dlq_out": len(dlq),
            "valid_counted": int(counted),
            "valid_scored": int(scored),
            "lost": n_malformed - len(dlq) + n_valid - int(counted),
            "detector_restarts": 0 if not problems else len(problems),
            "seconds_to_consume_all": round(elapsed, 2),
            "seed": SEED,
        },
    )
    assert dlq_reasons == outcome
    assert metric_reasons == dict(outcome)
    for x in dlq[:50]:
        h = dict(x.headers())
        assert h["source.topic"].decode() == s.input_topic and int(h["source.offset"]) >= 0
    assert counted == n_valid, "a valid reading was not consumed and counted"
    assert scored > 0.8 * len(valid)
    assert not problems, problems[:5]


@pytest.mark.parametrize("field", ["device_id", "device_type", "metric_name"])
def test_ids_that_are_not_valid_unicode_are_refused(field: str) -> None:
    """A lone surrogate passed the lenient JSON path: as a label it broke every /metrics
    scrape, as an anomaly key it raised while committing the batch (on every retry)."""
    d = {**_good(random.Random(0)), field: "pump-\ud800"}
    with pytest.raises(ReadingError) as e:
        decode_reading(json.dumps(d).encode())
    assert e.value.reason == "wrong_type"
