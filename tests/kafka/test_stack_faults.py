"""Faults of the embedded stack itself, injected for real (issue 13, item 10): a service's
parent SIGKILLed while its children keep the port, two `stack up` at once on one state dir,
Prometheus's lifecycle API, MLflow's Host-header guard, and what `stack up` prints."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from iot_mlops.config import Settings
from iot_mlops.kafka.stack import MLflow, Prometheus, Stack, free_port

pytestmark = pytest.mark.integration


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _procs_in(state: Path) -> list[psutil.Process]:
    """Processes running in a service directory of ``state`` (every service's cwd), found
    without the stack's own bookkeeping."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.cwd().startswith(str(state)) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


@contextlib.contextmanager
def _reaped(state: Path) -> Iterator[None]:
    """Whatever a test (or a bug) leaves running under ``state`` is killed afterwards."""
    try:
        yield
    finally:
        for proc in _procs_in(state):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def _cli_env(state: Path) -> dict[str, str]:
    kafka_port = free_port()
    return {
        **os.environ,
        "COLUMNS": "250",
        "IOT_MLOPS_STATE_DIR": str(state),
        "IOT_MLOPS_KAFKA_PORT": str(kafka_port),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        "IOT_MLOPS_KAFKA_CONTROLLER_PORT": str(free_port()),
        "IOT_MLOPS_MLFLOW_PORT": str(free_port()),
        "IOT_MLOPS_INPUT_PARTITIONS": "1",
    }


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    exe = Path(sys.executable).with_name("iot-mlops")
    return subprocess.Popen(
        [str(exe), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _run(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = _cli(*args, env=env)
    out, _ = proc.communicate(timeout=400)
    return proc.returncode, out


def _kill_mlflow_parent(state: Path) -> list[psutil.Process]:
    """SIGKILL MLflow's parent process; returns its children, which survive it."""
    import json

    pid = json.loads((state / "run" / "mlflow.pid").read_text())["pid"]
    parent = psutil.Process(pid)
    children = parent.children(recursive=True)
    assert children, "MLflow runs no child process: nothing to orphan"
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: not psutil.pid_exists(pid) or parent.status() == "zombie", 30, "the kill")
    assert any(c.is_running() for c in children)
    return children


def test_killed_mlflow_parent_leaves_nothing_behind(tmp_path: Path) -> None:
    """SIGKILL MLflow's parent: its children keep the port. `stack up` again stops them and
    starts afresh; after a second kill `stack down` frees the port and leaves no process."""
    state = tmp_path / "state"
    env = _cli_env(state)
    port = int(env["IOT_MLOPS_MLFLOW_PORT"])
    with _reaped(state):
        code, out = _run("stack", "up", "--no-prometheus", env=env)
        assert code == 0, out
        _kill_mlflow_parent(state)
        assert _port_taken(port), "the orphaned children no longer hold the port"
        code, out = _run("stack", "up", "--no-prometheus", env=env)
        assert code == 0, out
        assert "mlflow: stopped" in out and "leftover" in out, out
        assert "mlflow: healthy" in out, out
        orphans = _kill_mlflow_parent(state)
        code, out = _run("stack", "down", env=env)
        assert code == 0 and "mlflow" in out, out
        _wait(lambda: not _port_taken(port), 60, f"MLflow's port {port} to be free")
        assert not [c.pid for c in orphans if c.is_running() and c.status() != "zombie"]
        assert not _procs_in(state), [p.cmdline()[:4] for p in _procs_in(state)]


def test_two_concurrent_ups_one_wins_the_other_says_why(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = _cli_env(state)
    with _reaped(state):
        first, second = _cli("stack", "up", "--no-prometheus", env=env), None
        # Start the second once the first is at work (it has made run/; Kafka then takes
        # seconds to format and start, so the two overlap).
        _wait(lambda: (state / "run").exists(), 60, "the first up to start")
        second = _cli("stack", "up", "--no-prometheus", env=env)
        outs = [p.communicate(timeout=400)[0] for p in (first, second)]
        codes = [first.returncode, second.returncode]
        assert codes == [0, 1], outs
        assert "already starting or stopping the stack" in outs[1], outs[1]
        assert "iot-mlops stack status" in outs[1] and "Traceback" not in outs[1]
        code, out = _run("stack", "status", env=env)
        assert code == 0 and "healthy" in out, out
        kafkas = [p for p in _procs_in(state) if "kafka.Kafka" in p.cmdline()]
        assert len(kafkas) == 1, [p.cmdline()[-1] for p in kafkas]
        code, out = _run("stack", "down", env=env)
        assert code == 0, out
        assert not _procs_in(state)


@pytest.mark.skipif(Prometheus(Settings()).available() is not None, reason="no prometheus")
def test_prometheus_has_no_unauthenticated_quit(tmp_path: Path) -> None:
    svc = Prometheus(Settings(state_dir=tmp_path, prometheus_port=free_port()))
    try:
        svc.start()
        svc.wait_healthy(120)
        quit_ = httpx.post(f"{svc.url}/-/quit", timeout=10)
        reload_ = httpx.post(f"{svc.url}/-/reload", timeout=10)
        assert quit_.status_code == 403 and reload_.status_code == 403, quit_.text
        time.sleep(1)  # a quit that was obeyed takes effect within moments
        assert svc.pid() is not None and svc.healthy()
    finally:
        svc.stop()
    assert svc.pid() is None


def test_mlflow_refuses_host_headers_it_does_not_serve(stack: Stack) -> None:
    """DNS rebinding: a page on another name (here a private address, which MLflow's own
    default allows) must not reach the loopback server; its own names still do."""
    mlflow_svc = next(s for s in stack.services if isinstance(s, MLflow))
    url = f"{mlflow_svc.url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
    port = mlflow_svc.port

    def status(host: str) -> int:
        return httpx.get(url, headers={"Host": host}, timeout=10).status_code

    assert status(f"10.1.2.3:{port}") == 403
    assert status(f"rebind.example:{port}") == 403
    assert status(f"127.0.0.1:{port}") == 200
    assert status(f"localhost:{port}") == 200


def test_down_on_a_dir_never_started_stops_nothing_and_creates_nothing(tmp_path: Path) -> None:
    state = tmp_path / "never-started"
    assert Stack(Settings(state_dir=state)).down() == []
    assert not state.exists()
