"""simulate → Kafka → collect on the session's real broker (unique topics per test)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from typer.testing import CliRunner

from iot_mlops.cli import app
from iot_mlops.config import Settings
from iot_mlops.data import simulate as sim
from iot_mlops.data.collect import collect
from iot_mlops.data.simulate import ANOMALY_BLOCK, build_fleet, generate
from iot_mlops.errors import ConfigError

pytestmark = pytest.mark.integration

INTERVAL = 60
T0 = (1_780_000_000_000 // (ANOMALY_BLOCK * INTERVAL * 1000)) * ANOMALY_BLOCK * INTERVAL * 1000
HOUR = 3_600_000


def _small(settings: Settings) -> Settings:
    return settings.model_copy(update={"sim_devices": 3, "sim_seed": 11})


def _expected(s: Settings, start_ms: int, n_steps: int) -> pd.DataFrame:
    df = generate(build_fleet(s.sim_seed, s.sim_devices), start_ms, n_steps, INTERVAL, s.sim_seed)
    return df.drop(columns=["anomaly_kind"])


def test_backfill_to_kafka_then_collect_round_trips(settings: Settings, tmp_path: Path) -> None:
    s = _small(settings)
    report = sim.backfill_to_kafka(s, hours=2, end_ms=T0 + 2 * HOUR, progress=False)
    want = _expected(s, T0, 120)
    assert report.rows == report.delivered == len(want)
    assert report.failed == 0

    out = tmp_path / "train.parquet"
    got_report = collect(s, out, progress=False)
    got = pd.read_parquet(out)
    pd.testing.assert_frame_equal(got, want)
    assert got_report.rows == len(want)
    assert got_report.duplicates == 0
    assert got_report.rejected_total == 0
    assert got_report.labelled == int(want["is_anomaly"].sum())

    # A time bound keeps only the readings strictly before it.
    first_hour = collect(s, tmp_path / "h1.parquet", until_ms=T0 + HOUR, progress=False)
    got = pd.read_parquet(tmp_path / "h1.parquet")
    pd.testing.assert_frame_equal(got, _expected(s, T0, 60))
    assert first_hour.rows == len(got)


def test_live_continues_the_backfill(settings: Settings, tmp_path: Path) -> None:
    s = _small(settings)
    sim.backfill_to_kafka(s, hours=1, end_ms=T0 + HOUR, progress=False)
    # Far above the fleet's natural rate: simulated time runs ahead of the wall clock.
    live = sim.live_to_kafka(s, rate=2000, duration_s=0.5, start_ms=T0 + HOUR, progress=False)
    assert live.rows > 0
    assert live.delivered == live.rows
    assert live.failed == 0
    collect(s, tmp_path / "all.parquet", progress=False)
    got = pd.read_parquet(tmp_path / "all.parquet")
    n_series = sum(len(d.metrics) for d in build_fleet(s.sim_seed, s.sim_devices))
    steps = -(-(60 * n_series + live.rows) // n_series)
    want = _expected(s, T0, steps).iloc[: len(got)]
    # Live rounds are produced in frame order, so the collected rows are its prefix.
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True))


def test_garbage_is_rejected_by_reason_and_duplicates_dropped(
    settings: Settings, tmp_path: Path
) -> None:
    s = _small(settings)
    # The same backfill twice: every reading arrives twice.
    sim.backfill_to_kafka(s, hours=1, end_ms=T0 + HOUR, progress=False)
    sim.backfill_to_kafka(s, hours=1, end_ms=T0 + HOUR, progress=False)
    valid = {
        "device_id": "pump-001",
        "device_type": "pump",
        "metric_name": "temperature",
        "metric_value": 1.0,
        "timestamp": "2026-01-01T00:00:00.000Z",
    }
    garbage = [
        b"not json at all",
        b"[1, 2, 3]",
        json.dumps({"device_id": "pump-001"}).encode(),
        json.dumps({**valid, "metric_value": float("nan")}).encode(),
        json.dumps({**valid, "timestamp": "yesterday"}).encode(),
        json.dumps({**valid, "metric_value": "hot"}).encode(),
        b"x" * (s.max_message_bytes + 1),
    ]
    p = Producer(s.kafka_common())
    for g in garbage:
        p.produce(s.input_topic, g, b"pump-001")
    assert p.flush(30) == 0

    report = collect(s, tmp_path / "out.parquet", progress=False)
    want = _expected(s, T0, 60)
    assert dict(report.rejected) == {
        "not_json": 1,
        "not_object": 1,
        "missing_field": 1,
        "non_finite": 1,
        "bad_timestamp": 1,
        "wrong_type": 1,
        "oversized": 1,
    }
    assert report.duplicates == len(want)
    assert report.rows == len(want)
    got = pd.read_parquet(tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(got, want)


def test_unlabelled_readings_give_a_nullable_label(settings: Settings, tmp_path: Path) -> None:
    base = {
        "device_id": "dev-1",
        "device_type": "pump",
        "metric_name": "temperature",
        "metric_value": 1.5,
    }
    p = Producer(settings.kafka_common())
    p.produce(settings.input_topic, json.dumps({**base, "timestamp": "2026-01-01T00:00:00Z"}))
    p.produce(
        settings.input_topic,
        json.dumps({**base, "timestamp": "2026-01-01T00:01:00Z", "is_anomaly": True}),
    )
    assert p.flush(30) == 0
    report = collect(settings, tmp_path / "x.parquet", progress=False)
    got = pd.read_parquet(tmp_path / "x.parquet")
    assert str(got["is_anomaly"].dtype) == "boolean"
    assert got["is_anomaly"].isna().tolist() == [True, False]
    assert report.unlabelled == 1
    assert report.labelled == 1


def test_empty_topic_is_a_config_error(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="simulate --hours 24"):
        collect(settings, tmp_path / "x.parquet", progress=False)
    assert not (tmp_path / "x.parquet").exists()


def test_cli_collect_empty_topic_exits_2(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    res = CliRunner().invoke(
        app, ["collect", "--out", str(tmp_path / "x.parquet"), "--topic", settings.input_topic]
    )
    assert res.exit_code == 2, res.output
    assert "is empty" in res.output
    assert "iot-mlops simulate --hours 24" in res.output


def test_cli_simulate_to_kafka_then_collect(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    end = pd.Timestamp(T0 + HOUR, unit="ms", tz="UTC").isoformat()
    topic = ["--topic", settings.input_topic]
    res = CliRunner().invoke(
        app,
        ["simulate", "--hours", "1", "--end", end, "--devices", "3", "--seed", "11", *topic],
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "c.parquet"
    res = CliRunner().invoke(app, ["collect", "--out", str(out), *topic, "--no-progress"])
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(pd.read_parquet(out), _expected(_small(settings), T0, 60))


def test_cli_live_stops_cleanly_on_sigterm(settings: Settings, tmp_path: Path) -> None:
    """Live mode until a signal: it flushes, prints its report and exits 0; every reading it
    reported as delivered is in the topic."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers}
    cmd = [sys.executable, "-m", "iot_mlops.cli", "simulate", "--rate", "200"]
    cmd += ["--topic", settings.input_topic, "--devices", "3", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Wait (bounded) until readings arrive, so the signal lands in the live loop.
        probe = Consumer({**settings.kafka_common(), "group.id": "probe"})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            parts = probe.list_topics(settings.input_topic, timeout=10).topics
            tps = [
                TopicPartition(settings.input_topic, p)
                for p in parts[settings.input_topic].partitions
            ]
            if sum(probe.get_watermark_offsets(tp, timeout=10)[1] for tp in tps) > 0:
                break
            time.sleep(0.2)
        probe.close()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr.decode()
    assert "interrupted" in stdout.decode()
    report = collect(settings, tmp_path / "live.parquet", progress=False)
    assert report.rows > 0
    assert report.duplicates == 0
