"""``iot-mlops detect``: wires settings, metrics, HTTP endpoints, signals and the runner."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from iot_mlops.config import Settings
from iot_mlops.detector.http import serve
from iot_mlops.detector.metrics import DetectorMetrics
from iot_mlops.detector.runner import Detector
from iot_mlops.errors import ServiceError

log = logging.getLogger("iot_mlops.detector")


def run_detector(settings: Settings) -> int:
    metrics = DetectorMetrics(max_label_values=settings.max_label_values)
    detector = Detector(settings, metrics)

    def health() -> dict[str, object]:
        stalled = detector.stalled_for()
        return {
            "live": stalled < settings.stall_after_s,
            "loop_idle_s": round(stalled, 1),
            "ready": detector.ready(),
            "model_loaded": detector.engine is not None,
            "model_version": detector.engine.version if detector.engine else None,
            "partitions": sorted(f"{t}[{p}]" for t, p in detector.assigned),
        }

    try:
        server = serve(settings.metrics_host, settings.metrics_port, metrics.registry, health)
    except OSError as e:
        raise ServiceError(
            f"the detector cannot serve metrics on "
            f"{settings.metrics_host}:{settings.metrics_port}: {e}",
            fix="stop what uses that port or set IOT_MLOPS_METRICS_PORT",
        ) from None
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if detector.stop_event.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        log.info("%s: finishing the current batch, then stopping", signal.Signals(signum).name)
        detector.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    try:
        return detector.run()
    finally:
        server.shutdown()
