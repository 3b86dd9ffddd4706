"""The detector's HTTP endpoints: ``/metrics`` (Prometheus), ``/livez`` and ``/readyz``.

* ``/livez``: 200 while the detector's loop moves (polling, scoring, rebuilding state); 503
  once it has stalled for ``stall_after_s``: restart it. A spare replica without partitions,
  or one waiting for its model, is alive.
* ``/readyz`` (and ``/healthz``, its older name): 200 only when a model is loaded and the
  consumer has partitions, so an orchestrator does not count a replica that cannot score yet.

Each answers with the same JSON state (live, ready, model, partitions).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A probe that timed out and hung up before its answer is not the detector's error:
        # the default would print a traceback into the detector's log.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        log.exception("HTTP request from %s failed", client_address)


def serve(
    host: str, port: int, registry: CollectorRegistry, health: Callable[[], dict[str, object]]
) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path.startswith(("/livez", "/readyz", "/healthz")):
                state = health()
                ok = state.get("live") if self.path.startswith("/livez") else state.get("ready")
                self._send(200 if ok else 503, orjson.dumps(state), "application/json")
            else:
                self._send(404, b"not found: try /metrics, /livez or /readyz\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would drown the log

    server = _Server((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
