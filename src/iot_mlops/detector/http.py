"""The detector's HTTP endpoints: ``/metrics`` (Prometheus), ``/livez`` and ``/readyz``.

``/livez`` is 200 while the consume loop runs and came round recently
(``IOT_MLOPS_LIVENESS_MAX_AGE_S``): restart the process only when it fails. A spare replica
with no partitions, or one waiting for its first model, is alive. ``/readyz`` is 200 only
when a model is loaded and the consumer has at least one partition, so an orchestrator does
not route or count a replica that cannot score yet. ``/healthz`` is kept as an alias of
``/readyz`` for the scripts and dashboards that used it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Probe = Callable[[], dict[str, object]]
# path -> the key of the probe's state that decides 200 / 503
CHECKS = {"/livez": "alive", "/readyz": "ready", "/healthz": "ready"}


def serve(host: str, port: int, registry: CollectorRegistry, health: Probe) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in CHECKS:
                state = health()
                code = 200 if state.get(CHECKS[path]) else 503
                self._send(code, orjson.dumps(state), "application/json")
            else:
                body = b"not found: try /metrics, /livez or /readyz\n"
                self._send(404, body, "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would drown the log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
