"""The simulator: deterministic for a seed, seamless across windows, labels that cover exactly
the injected anomalies. Pure (no services) except where marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from iot_mlops.cli import app
from iot_mlops.config import Settings
from iot_mlops.data import collect as collect_mod
from iot_mlops.data import simulate as sim
from iot_mlops.data.simulate import (
    ANOMALY_BLOCK,
    ANOMALY_KINDS,
    COLUMNS,
    LABEL_SIGMAS,
    STUCK_MIN_STEPS,
    build_fleet,
    generate,
    readings,
)
from iot_mlops.errors import ServiceError
from iot_mlops.events import decode_reading, encode_reading
from iot_mlops.kafka import clients
from iot_mlops.kafka.stack import free_port

pytestmark = pytest.mark.unit

INTERVAL = 60
# Aligned to the anomaly blocks, so no event is cut by the window edges.
T0 = (1_780_000_000_000 // (ANOMALY_BLOCK * INTERVAL * 1000)) * ANOMALY_BLOCK * INTERVAL * 1000
HOUR = 3_600_000


def test_fleet_ids_are_stable_and_types_rotate() -> None:
    fleet = build_fleet(42, 10)
    ids = [d.device_id for d in fleet]
    assert ids[:4] == ["pump-001", "compressor-001", "hvac-001", "pump-002"]
    assert len(set(ids)) == 10
    assert {d.device_type for d in fleet} == {"pump", "compressor", "hvac"}
    assert all(3 <= len(d.metrics) <= 4 for d in fleet)
    assert build_fleet(42, 10) == fleet
    # Growing the fleet keeps the existing devices exactly as they were.
    assert build_fleet(42, 12)[:10] == fleet
    # Another seed: same ids, other baselines.
    other = build_fleet(7, 10)
    assert [d.device_id for d in other] == ids
    assert other[0].metrics[0].base != fleet[0].metrics[0].base


def test_generate_schema_and_order() -> None:
    fleet = build_fleet(42, 10)
    df = generate(fleet, T0, 30, INTERVAL, 42)
    n_series = sum(len(d.metrics) for d in fleet)
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 30 * n_series
    assert df["metric_value"].dtype == np.float64
    assert str(df["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert df["is_anomaly"].dtype == bool
    assert (df.loc[~df["is_anomaly"], "anomaly_kind"] == "").all()
    key = ["timestamp", "device_id", "metric_name"]
    pd.testing.assert_frame_equal(df, df.sort_values(key).reset_index(drop=True))
    assert not df.duplicated(["device_id", "metric_name", "timestamp"]).any()
    assert df["timestamp"].iloc[0] == pd.Timestamp(T0, unit="ms", tz="UTC")


def test_same_seed_same_frame_other_seed_other_frame() -> None:
    a = generate(build_fleet(42, 10), T0, 600, INTERVAL, 42)
    b = generate(build_fleet(42, 10), T0, 600, INTERVAL, 42)
    pd.testing.assert_frame_equal(a, b)
    c = generate(build_fleet(43, 10), T0, 600, INTERVAL, 43)
    assert not np.allclose(a["metric_value"], c["metric_value"])


@pytest.mark.parametrize("offset_steps", [0, 7, 239])
def test_windows_continue_the_same_series(offset_steps: int) -> None:
    """Backfill then live: [t0, t0+2h) equals [t0, t0+1h) followed by [t0+1h, t0+2h), wherever
    the window edges fall relative to the noise and anomaly blocks."""
    fleet = build_fleet(42, 10)
    t0 = T0 + offset_steps * INTERVAL * 1000
    whole = generate(fleet, t0, 120, INTERVAL, 42, anomaly_rate=0.2)
    first = generate(fleet, t0, 60, INTERVAL, 42, anomaly_rate=0.2)
    second = generate(fleet, t0 + HOUR, 60, INTERVAL, 42, anomaly_rate=0.2)
    pd.testing.assert_frame_equal(whole, pd.concat([first, second], ignore_index=True))
    assert whole["is_anomaly"].any()  # the check above also covered labelled events


def _sigma(fleet: list[sim.Device], df: pd.DataFrame) -> np.ndarray:
    sigma = {(d.device_id, m.name): m.sigma for d in fleet for m in d.metrics}
    return np.array([sigma[k] for k in zip(df["device_id"], df["metric_name"], strict=True)])


def test_labels_cover_exactly_the_injected_anomalies() -> None:
    fleet = build_fleet(42, 10)
    n = 7 * 1440  # a week of minutes: every kind occurs for this seed
    df = generate(fleet, T0, n, INTERVAL, 42)
    clean = generate(fleet, T0, n, INTERVAL, 42, clean=True)
    assert not clean["is_anomaly"].any()

    kinds = set(df.loc[df["is_anomaly"], "anomaly_kind"])
    assert kinds == set(ANOMALY_KINDS)
    assert 0.005 < df["is_anomaly"].mean() < 0.03  # modest rate, as documented

    dev = (df["metric_value"] - clean["metric_value"]).abs().to_numpy() / _sigma(fleet, df)
    labelled = df["is_anomaly"].to_numpy()
    stuck = (df["anomaly_kind"] == "stuck").to_numpy()
    # Value-changing kinds depart by >= LABEL_SIGMAS noise sigmas wherever labelled...
    assert (dev[labelled & ~stuck] >= LABEL_SIGMAS).all()
    # ...and nothing unlabelled departs that far (a drift's onset stays below it).
    assert (dev[~labelled] < LABEL_SIGMAS).all()
    assert (dev[~labelled] == 0).mean() > 0.99  # almost all unlabelled points are untouched

    # Stuck: a flat line of at least STUCK_MIN_STEPS points, per series.
    runs = 0
    for _, g in df.groupby(["device_id", "metric_name"]):
        is_stuck = (g["anomaly_kind"] == "stuck").to_numpy()
        values = g["metric_value"].to_numpy()
        edges = np.flatnonzero(np.diff(np.r_[0, is_stuck.astype(int), 0]))
        for start, end in zip(edges[::2], edges[1::2], strict=True):
            runs += 1
            assert end - start >= STUCK_MIN_STEPS
            assert np.all(values[start:end] == values[start])
    assert runs > 0


def test_anomaly_rate_zero_and_clean() -> None:
    fleet = build_fleet(1, 4)
    none = generate(fleet, T0, 1440, INTERVAL, 1, anomaly_rate=0)
    clean = generate(fleet, T0, 1440, INTERVAL, 1, clean=True)
    assert not none["is_anomaly"].any()
    pd.testing.assert_frame_equal(none, clean)


def test_readings_round_trip_through_the_codec() -> None:
    df = generate(build_fleet(42, 3), T0, 5, INTERVAL, 42)
    rs = list(readings(df))
    assert len(rs) == len(df)
    r = decode_reading(encode_reading(rs[0]))
    assert r == rs[0]
    assert r.timestamp_ms == T0
    assert r.device_id == df["device_id"].iloc[0]
    assert r.metric_value == df["metric_value"].iloc[0]
    assert r.is_anomaly is False


def test_cli_simulate_parquet_writes_the_generated_frame(tmp_path: Path) -> None:
    out = tmp_path / "sim.parquet"
    end = pd.Timestamp(T0 + 2 * HOUR, unit="ms", tz="UTC").isoformat()
    res = CliRunner().invoke(
        app,
        [
            "simulate",
            "--hours",
            "2",
            "--end",
            end,
            "--devices",
            "4",
            "--seed",
            "5",
            "--parquet",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    got = pd.read_parquet(out)
    want = generate(build_fleet(5, 4), T0, 120, INTERVAL, 5)
    pd.testing.assert_frame_equal(got, want)


def test_cli_simulate_rejects_mixed_modes() -> None:
    res = CliRunner().invoke(app, ["simulate", "--hours", "1", "--rate", "10"])
    assert res.exit_code == 2
    assert "--hours" in res.output


def test_unreachable_kafka_is_a_clear_service_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on a fresh free port; the short timeout only keeps the test quick.
    monkeypatch.setattr(clients, "METADATA_TIMEOUT_S", 1.0)
    s = Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(ServiceError) as e:
        sim.backfill_to_kafka(s, 1, progress=False)
    assert s.kafka_bootstrap_servers in str(e.value)
    assert "iot-mlops stack up" in str(e.value)
    with pytest.raises(ServiceError) as e:
        collect_mod.collect(s, Path("unused.parquet"), progress=False)
    assert "iot-mlops stack up" in str(e.value)
