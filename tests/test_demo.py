"""`make demo`'s path, bounded: its own stack on free ports, simulate → collect → train →
promote → live simulator + detector, then the summary; a second run reuses the model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from iot_mlops.kafka.stack import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def _demo_env(tmp_path: Path) -> dict[str, str]:
    """The demo on its own stack: free ports, a small fleet, a short training."""
    kafka, mlflow = free_port(), free_port()
    env = dict(os.environ)
    env.update(
        IOT_MLOPS_STATE_DIR=str(tmp_path / "state"),
        IOT_MLOPS_KAFKA_PORT=str(kafka),
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{kafka}",
        IOT_MLOPS_KAFKA_CONTROLLER_PORT=str(free_port()),
        IOT_MLOPS_MLFLOW_PORT=str(mlflow),
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{mlflow}",
        IOT_MLOPS_PROMETHEUS_PORT=str(free_port()),
        IOT_MLOPS_METRICS_PORT=str(free_port()),
        IOT_MLOPS_SIM_DEVICES="3",
        IOT_MLOPS_TRAIN_MODELS="RecursiveTabular",
        IOT_MLOPS_TRAIN_TIME_LIMIT_S="40",
        IOT_MLOPS_CONTEXT_LENGTH="128",
        DEMO_SECONDS="45",
        DEMO_HOURS="36",
        DEMO_RATE="60",
        COLUMNS="160",
    )
    return env


DEMO = [sys.executable, str(ROOT / "scripts" / "demo.py")]


def _run_and_check(cmd: list[str], env: dict[str, str], state: Path) -> str:
    """One bounded demo run: it trains, scores, reports, and leaves nothing running."""
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out[-4000:]
    assert "iot-mlops train" in out and "demo summary" in out
    scored = int(re.search(r"readings scored\s+│?\s*([\d,]+)", out).group(1).replace(",", ""))
    assert scored > 0
    assert re.search(r"precision \(labelled, in episode\)\s+│?\s*[01]\.\d{3}", out)
    # The live simulator's accelerated clock must not turn readings into dead letters.
    dead = re.search(r"dead letters\s+│?\s*([\d,]+)", out)
    assert dead is not None and dead.group(1) == "0", out[-3000:]
    # Everything the demo started is stopped: no process of ours still runs from that state dir.
    leftovers = [
        p.info["pid"] for p in psutil.process_iter(["pid", "cmdline"])
        if p.info["cmdline"] and any(str(state) in part for part in p.info["cmdline"])
    ]  # fmt: skip
    assert not leftovers
    return out


def test_demo_runs_bounded_and_reports_precision(tmp_path: Path) -> None:
    env = _demo_env(tmp_path)
    demo = DEMO
    _run_and_check(demo, env, tmp_path / "state")
    # The second run reuses the promoted model instead of training again.
    env["DEMO_SECONDS"] = "10"
    second = subprocess.run(demo, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    assert "reusing" in second.stdout and "iot-mlops train" not in second.stdout


def test_demo_runs_on_the_secure_stack(tmp_path: Path) -> None:
    """`make demo DEMO_ARGS=--secure`: the same path with TLS, SCRAM and ACLs on, each step as
    its own principal (the detector as detector, the simulator as device, ...)."""
    env = _demo_env(tmp_path)
    env["DEMO_SECONDS"] = "30"
    out = _run_and_check([*DEMO, "--secure"], env, tmp_path / "state")
    assert "secure:" in out and "ACL bindings" in out, out[-3000:]
    assert (tmp_path / "state" / "secrets" / "credentials.json").exists()
    assert "https://" in out
