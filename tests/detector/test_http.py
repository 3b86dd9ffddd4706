"""The detector's probes: alive is not the same as ready (a spare replica with no partitions,
or one waiting for its model, is alive and must not be restarted)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
from detector_helpers import detector_process, stop_detector, wait_until
from prometheus_client import CollectorRegistry, Counter

from iot_mlops.config import Settings
from iot_mlops.detector.http import serve
from iot_mlops.kafka.stack import free_port


def _codes(port: int) -> dict[str, int]:
    url = f"http://127.0.0.1:{port}"
    return {p: httpx.get(f"{url}/{p}", timeout=5).status_code
            for p in ("livez", "readyz", "healthz", "metrics", "nope")}  # fmt: skip


@pytest.mark.unit
def test_each_probe_answers_from_its_own_state() -> None:
    registry = CollectorRegistry()
    Counter("iot_probe_test", "a metric", registry=registry).inc()
    state = {"live": True, "ready": False}
    port = free_port()
    server = serve("127.0.0.1", port, registry, lambda: dict(state))
    try:
        assert _codes(port) == {"livez": 200, "readyz": 503, "healthz": 503, "metrics": 200,
                                "nope": 404}  # fmt: skip
        state.update(ready=True)
        assert _codes(port)["readyz"] == _codes(port)["healthz"] == 200
        state.update(live=False)  # stalled: restart it, whatever it last said about readiness
        assert _codes(port)["livez"] == 503
        body = httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5).json()
        assert body == {"live": False, "ready": True}
    finally:
        server.shutdown()


@pytest.mark.unit
def test_a_probe_that_hangs_up_before_its_answer_leaves_no_traceback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A slow answer to a client that already reset the connection: the write fails with a
    connection error, which is the client's doing, so nothing is printed (it was a
    BrokenPipeError traceback in the detector's log)."""
    import socket
    import struct

    answered = []

    def slow_health() -> dict[str, object]:
        time.sleep(0.5)  # the client is gone by now
        answered.append(True)
        return {"live": True, "ready": True}

    port = free_port()
    server = serve("127.0.0.1", port, CollectorRegistry(), slow_health)
    try:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        # SO_LINGER 0: close with a reset, as a probe's timeout does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        wait_until(lambda: bool(answered), 10, "the answer attempted")
        time.sleep(0.3)
        assert httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5).status_code == 200
    finally:
        server.shutdown()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err


@pytest.mark.integration
def test_a_detector_waiting_for_its_model_is_alive_not_ready(
    settings: Settings, tmp_path: Path
) -> None:
    s = settings.model_copy(update={"metrics_port": free_port()})
    log = tmp_path / "detector.log"
    proc = detector_process(
        s, log, IOT_MLOPS_MODEL_NAME=f"no-such-model-{uuid.uuid4().hex[:6]}",
        IOT_MLOPS_ALIAS_POLL_INTERVAL_S="1",
    )  # fmt: skip
    url = f"http://127.0.0.1:{s.metrics_port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/livez", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 60, "/livez answering 200")
        state = httpx.get(f"{url}/readyz", timeout=5)
        assert state.status_code == 503 and state.json()["model_loaded"] is False
        assert state.json()["live"] is True and state.json()["loop_idle_s"] < 60
        # It polls the registry every second meanwhile; its log says what it waits for, not
        # one line per HTTP request of the probe.
        time.sleep(3)
        text = log.read_text()
        assert "HTTP Request" not in text, text[-2000:]
    finally:
        if proc.poll() is None:
            stop_detector(proc, log)
