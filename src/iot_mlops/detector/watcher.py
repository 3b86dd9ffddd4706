"""The model watcher: polls the registry alias and loads a newly promoted version in the
background, for the runner to swap in between batches."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from iot_mlops.config import Settings
from iot_mlops.detector.metrics import DetectorMetrics
from iot_mlops.lifecycle.integrity import ModelIntegrityError
from iot_mlops.scoring.engine import ForecasterLike

log = logging.getLogger("iot_mlops.detector")

Resolver = Callable[[Settings], str | None]
Loader = Callable[[Settings, str], ForecasterLike]


def default_resolver(settings: Settings) -> str | None:
    from iot_mlops.lifecycle.registry import resolve_alias

    return resolve_alias(settings)


def default_loader(settings: Settings, version: str) -> ForecasterLike:
    from iot_mlops.lifecycle.registry import load_forecaster

    return load_forecaster(settings, version=version)


@dataclass
class LoadFailure:
    """A version whose last load failed: how often, why, and when to try again."""

    attempts: int
    reason: str
    retry_at: float  # time.monotonic()


class ModelWatcher(threading.Thread):
    """Polls the registry alias and loads a newly promoted version in the background; the
    runner swaps it in between batches. A version that fails to load is counted, logged and
    retried with capped exponential backoff (MLflow may restart between resolve and load, an
    artifact download may time out); the old model keeps serving meanwhile."""

    def __init__(
        self,
        settings: Settings,
        metrics: DetectorMetrics,
        stop: threading.Event,
        resolve: Resolver = default_resolver,
        load: Loader = default_loader,
    ) -> None:
        super().__init__(name="model-watcher", daemon=True)
        self.settings, self.metrics, self.stop_event = settings, metrics, stop
        self.resolve, self.load = resolve, load
        self.current: str | None = None
        # Versions whose last load attempt failed (cleared when one loads).
        self.failed: dict[str, LoadFailure] = {}
        self._pending: ForecasterLike | None = None
        self._lock = threading.Lock()
        self.wake = threading.Event()

    def take(self) -> ForecasterLike | None:
        with self._lock:
            model, self._pending = self._pending, None
            return model

    def poll_once(self) -> None:
        s = self.settings
        version = self._resolve()
        if version is None or version == self.current:
            return
        failure = self.failed.get(version)
        if failure is not None and time.monotonic() < failure.retry_at:
            return
        log.info("loading %s version %s (alias %s)", s.model_name, version, s.model_alias)
        try:
            model = self.load(s, version)
        except Exception as e:
            if isinstance(e, ModelIntegrityError):
                self.metrics.model_refused.inc()
            self._failed(version, str(e).splitlines()[0][:300] if str(e) else type(e).__name__)
            return
        self.failed.pop(version, None)
        with self._lock:
            self._pending = model
        self.current = version

    def _failed(self, version: str, reason: str) -> None:
        """Count and log one failed attempt; schedule the next one (doubling, capped)."""
        s = self.settings
        attempts = self.failed[version].attempts + 1 if version in self.failed else 1
        delay = min(s.model_retry_max_s, s.alias_poll_interval_s * 2 ** min(attempts - 1, 30))
        self.failed[version] = LoadFailure(attempts, reason, time.monotonic() + delay)
        self.metrics.model_reloads.labels(result="failure").inc()
        log.error(
            "loading %s version %s failed; keeping %s (attempt %d, next in %.0f s): %s",
            s.model_name, version,
            f"version {self.current}" if self.current else "no model (waiting)",
            attempts, delay, reason,
        )  # fmt: skip

    def _resolve(self) -> str | None:
        """The version the alias points at; None (logged) when unknown or unset."""
        s = self.settings
        try:
            version = self.resolve(s)
            self.metrics.registry_reachable.set(1)
        except Exception as e:  # the registry being down must never stop scoring
            self.metrics.registry_reachable.set(0)
            log.warning(
                "MLflow registry at %s unreachable (%s); keeping the current model. "
                "Start it with `iot-mlops stack up` or set MLFLOW_TRACKING_URI.",
                s.mlflow_tracking_uri, str(e).splitlines()[0][:200],
            )  # fmt: skip
            return None
        if version is None:
            log.warning(
                "no version of model %r has alias %r yet; waiting. Promote one with "
                "`iot-mlops train --data … --promote` or `iot-mlops promote VERSION`.",
                s.model_name, s.model_alias,
            )  # fmt: skip
        return version

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.poll_once()
            self.wake.wait(self.settings.alias_poll_interval_s)
            self.wake.clear()
