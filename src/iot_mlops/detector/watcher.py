"""The model watcher: polls the registry alias and loads a newly promoted version in the
background, for the runner to swap in between batches."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from iot_mlops.config import Settings
from iot_mlops.detector.metrics import DetectorMetrics
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


class ModelWatcher(threading.Thread):
    """Polls the registry alias and loads a newly promoted version in the background; the
    runner swaps it in between batches. A version that fails to load is counted, logged and
    not retried until the alias moves again; the old model keeps serving."""

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
        self.failed: set[str] = set()
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
        if version is None or version == self.current or version in self.failed:
            return
        log.info("loading %s version %s (alias %s)", s.model_name, version, s.model_alias)
        try:
            model = self.load(s, version)
        except Exception as e:
            self.failed.add(version)
            self.metrics.model_reloads.labels(result="failure").inc()
            log.error(
                "loading %s version %s failed; keeping version %s: %s",
                s.model_name, version, self.current, str(e).splitlines()[0][:300],
            )  # fmt: skip
            return
        with self._lock:
            self._pending = model
        self.current = version

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
