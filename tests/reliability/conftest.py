"""Fixtures of the fault-injection suite (`pytest -m reliability`).

Every fault test compares what a detector published under the fault with what an
uninterrupted detector published for the same stream (the *reference*). The engine's
decisions depend only on each series' sequence of readings (forecast refreshes are aligned to
the time grid, not to batches), so one reference run per stream serves every test that
replays that stream, whatever broker or topic it flows through.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from detector_helpers import (
    ProductionModel,
    RunningDetector,
    caught_up,
    detector_settings,
    wait_until,
)
from reliability_helpers import Reference, anomaly_keys, fresh_topics, stream

from iot_mlops.config import Settings

# The standard stream: 200 steps of warm-up context, then 400 steps with labelled anomalies,
# for the 15 series of the session model's fleet (9,000 readings).
STREAM_START, STREAM_STEPS = -200, 600

_HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test of this folder is a fault test on the real services: one place marks them
    (``-m reliability`` selects them, ``-m "not integration"`` leaves them out)."""
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.reliability)
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def det_settings(stack_settings: Settings, production_model: ProductionModel) -> Settings:
    return detector_settings(fresh_topics(stack_settings, "rel"), production_model)


@pytest.fixture(scope="session")
def reference(stack_settings: Settings, production_model: ProductionModel) -> Reference:
    """The standard stream scored by one uninterrupted in-process detector."""
    import time

    from confluent_kafka import Producer

    s = detector_settings(fresh_topics(stack_settings, "ref"), production_model)
    messages = stream(production_model, STREAM_START, STREAM_STEPS)
    p = Producer({**s.kafka_common(), "enable.idempotence": True, "linger.ms": 5})
    for key, value in messages:
        p.produce(s.input_topic, value, key=key)
    assert p.flush(60) == 0
    t0 = time.monotonic()
    det = RunningDetector(s)
    try:
        wait_until(lambda: caught_up(s), 300, "reference detector caught up")
    finally:
        det.stop()
    expected = anomaly_keys(s)
    assert expected and max(expected.values()) == 1, "the reference run itself duplicated"
    print(f"\nreference: {len(messages)} readings, {len(expected)} anomalies")
    return Reference(messages, expected, time.monotonic() - t0)
