"""The MLflow model registry: load the serving model, resolve and move the alias, list versions.

The detector only ever reads the alias (``models:/<name>@<alias>``), so promoting here, with
``iot-mlops promote`` or in the MLflow UI, is what deploys a model. Promotion through this
module is gated on the holdout metrics logged at training time, so a worse model cannot replace
a better one by accident (``--force`` overrides, on purpose).

Every call fails fast when MLflow is down: the detector polls the alias, and MLflow's default
retry policy (several retries with exponential backoff) would stall it for minutes.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from iot_mlops.config import Settings
from iot_mlops.errors import ModelError, ServiceError
from iot_mlops.lifecycle import history, integrity

# Lower MASE is better; F1 (where both versions have labelled holdout data) must not drop by
# more than this, since F1 on a handful of labelled anomalies is noisy.
F1_TOLERANCE = 0.05
# Metrics copied onto each model version as tags ("metric.<name>"), so that listing versions
# and gating promotions need no run lookups.
VERSION_METRICS = (
    "mase",
    "wql",
    "threshold",
    "precision",
    "recall",
    "f1",
    "event_recall",
    "coverage",
)
METRIC_TAG_PREFIX = "metric."

# MLflow runs a model's code with a stand-in ``dbutils`` in ``sys.modules`` and puts back what
# it found; two loads at once nest that and leave the stand-in for the process's life.
_LOAD_LOCK = threading.Lock()

_FIX = "start it with `iot-mlops stack up`, or set MLFLOW_TRACKING_URI to a running server"


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_mlflow(settings: Settings, timeout_s: float = 3.0) -> None:
    """Raise ``ServiceError`` unless the tracking server answers ``/health``."""
    uri = settings.mlflow_tracking_uri
    if not _is_http(uri):
        return  # a local store (file:, sqlite:) has no server to be down
    try:
        r = httpx.get(
            uri.rstrip("/") + "/health",
            timeout=timeout_s,
            verify=settings.mlflow_tracking_server_cert_path or True,
        )
    except httpx.HTTPError as e:
        raise ServiceError(f"MLflow at {uri} is unreachable ({type(e).__name__})", _FIX) from None
    if r.status_code != 200:
        raise ServiceError(f"MLflow at {uri} is unhealthy (HTTP {r.status_code} on /health)", _FIX)


@contextlib.contextmanager
def mlflow_env(**variables: str) -> Iterator[None]:
    """Set MLflow's environment variables for the calls inside, then restore them. MLflow
    reads them on every request, so this is enough. Artifact progress bars are always off:
    one bar per downloaded file says nothing a user needs (`train`, `detect`)."""
    variables = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", **variables}
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def mlflow_calls(settings: Settings, retries: int = 0, timeout_s: int = 10) -> Iterator[Any]:
    """An ``MlflowClient`` for ``settings``' server with a short retry/timeout policy, and
    MLflow's exceptions translated into ours."""
    import mlflow
    from mlflow.exceptions import MlflowException

    check_mlflow(settings)
    try:
        with mlflow_env(
            MLFLOW_HTTP_REQUEST_MAX_RETRIES=str(retries),
            MLFLOW_HTTP_REQUEST_TIMEOUT=str(timeout_s),
            **settings.mlflow_client_env(),
        ):
            yield mlflow.MlflowClient(
                tracking_uri=settings.mlflow_tracking_uri,
                registry_uri=settings.mlflow_tracking_uri,
            )
    except MlflowException as e:
        if _is_connection_problem(e):
            raise ServiceError(
                f"MLflow at {settings.mlflow_tracking_uri} failed: {_short(e)}", _FIX
            ) from None
        raise ModelError(f"MLflow: {_short(e)}") from None


def _short(e: Exception) -> str:
    msg = getattr(e, "message", None) or str(e)
    return msg.splitlines()[0][:300]


def _is_connection_problem(e: Exception) -> bool:
    msg = str(e)
    return any(
        s in msg
        for s in ("Max retries exceeded", "Connection refused", "timed out", "ConnectionError")
    )


def _not_found(e: Exception) -> bool:
    code = getattr(e, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(e).lower()


# --- reading the registry ---------------------------------------------------------------------


def resolve_alias(settings: Settings, alias: str | None = None) -> str | None:
    """The version behind ``alias`` (default ``settings.model_alias``), or None when the model
    or the alias does not exist yet. MLflow unreachable → ``ServiceError``."""
    from mlflow.exceptions import MlflowException

    alias = alias or settings.model_alias
    with mlflow_calls(settings) as client:
        try:
            mv = client.get_model_version_by_alias(settings.model_name, alias)
        except MlflowException as e:
            if _not_found(e) or getattr(e, "error_code", "") == "INVALID_PARAMETER_VALUE":
                return None
            raise
        return str(mv.version)


def get_version(settings: Settings, version: str) -> Any:
    """The ``ModelVersion``; an unknown version → ``ModelError`` naming the known ones."""
    from mlflow.exceptions import MlflowException

    with mlflow_calls(settings) as client:
        try:
            return client.get_model_version(settings.model_name, str(version))
        except MlflowException as e:
            if not (_not_found(e) or getattr(e, "error_code", "") == "INVALID_PARAMETER_VALUE"):
                raise
        known = [v.version for v in _search_versions(client, settings.model_name)]
    raise ModelError(
        f"model {settings.model_name!r} has no version {version!r}"
        + (f" (versions: {', '.join(sorted(known, key=int))})" if known else " (no versions yet)"),
        fix="`iot-mlops models` lists the versions; `iot-mlops train` registers a new one",
    )


def _search_versions(client: Any, name: str) -> list[Any]:
    return list(client.search_model_versions(f"name='{name}'"))


def load_forecaster(
    settings: Settings, version: str | None = None, alias: str | None = None
) -> Any:
    """Load a registered version (or the one behind ``alias``, default the settings' alias)
    as a ready-to-use ``Forecaster``: models persisted in memory, single-process, warmed up.

    The alias is resolved to a version first and the version is loaded, so the returned
    ``Forecaster.version`` is exactly what runs even if the alias moves meanwhile."""
    import mlflow

    from iot_mlops.model.forecaster import Forecaster
    from iot_mlops.model.pyfunc import ForecastModel

    if version is None:
        alias = alias or settings.model_alias
        version = resolve_alias(settings, alias)
        if version is None:
            raise ModelError(
                f"no version of model {settings.model_name!r} has the alias {alias!r} yet",
                fix=f"promote one: `iot-mlops promote VERSION --alias {alias}` "
                "(or `iot-mlops train --promote`)",
            )
    uri = f"models:/{settings.model_name}/{version}"
    # It looks the version up first: an unknown one → ModelError naming the known ones.
    local = download_verified(settings, str(version))
    try:
        with mlflow_calls(settings), _LOAD_LOCK:
            pyfunc = mlflow.pyfunc.load_model(str(local))
    except ModelError as e:  # e.g. the pyfunc's metadata check: say which version
        raise ModelError(f"{uri} cannot be loaded: {e.message}", fix=e.fix) from None
    model = pyfunc.unwrap_python_model()
    if not isinstance(model, ForecastModel) and not hasattr(model, "forecast"):
        raise ModelError(f"{uri} is not an iot-mlops forecaster (got {type(model).__name__})")
    if model.predictor is None or not model.metadata:
        raise ModelError(f"{uri} loaded without its predictor or metadata")
    return Forecaster(model, name=settings.model_name, version=str(version)).prepare()


def _download(settings: Settings, version: str, dst: Path | None = None) -> Path:
    """The version's artifact files in a new local directory (MLflow's own download)."""
    import mlflow

    dst = dst or Path(tempfile.mkdtemp(prefix=f"iot-mlops-model-v{version}-"))
    # Artifact downloads can be large: allow a couple of retries and a longer timeout.
    with mlflow_calls(settings, retries=2, timeout_s=120):
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        mlflow.set_registry_uri(settings.mlflow_tracking_uri)
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{settings.model_name}/{version}", dst_path=str(dst)
        )
    return Path(path)


def download_verified(settings: Settings, version: str) -> Path:
    """Download a version and check its files against the digest (or HMAC) recorded at
    registration, before anything is unpickled; a mismatch → ``ModelIntegrityError``. The
    directory stays for the process's life: the loaded predictor reads from it."""
    tags = dict(get_version(settings, version).tags or {})
    path = _download(settings, version)
    integrity.verify(
        tags,
        integrity.tree_digest(path),
        settings.model_signing_key.get_secret_value(),
        settings.model_require_digest,
        f"model {settings.model_name!r} version {version}",
    )
    return path


def record_integrity(settings: Settings, version: str) -> str:
    """Tag a just-registered version with the digest (and HMAC) of its stored files, as the
    detector will download them. Returns the digest."""
    with tempfile.TemporaryDirectory(prefix="iot-mlops-digest-") as tmp:
        digest = integrity.tree_digest(_download(settings, version, Path(tmp)))
    key = settings.model_signing_key.get_secret_value()
    set_version_tags(settings, version, integrity.integrity_tags(digest, key))
    return digest


# --- listing and promotion --------------------------------------------------------------------


@dataclass
class VersionInfo:
    version: str
    aliases: list[str]
    metrics: dict[str, float]
    created: datetime
    run_id: str | None
    best_model: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def _version_metrics(client: Any, mv: Any) -> dict[str, float]:
    """Metrics from the version's tags (written at registration), else from its run."""
    out: dict[str, float] = {}
    for k, v in (mv.tags or {}).items():
        if k.startswith(METRIC_TAG_PREFIX):
            with contextlib.suppress(ValueError):
                out[k[len(METRIC_TAG_PREFIX) :]] = float(v)
    if not out and mv.run_id:
        with contextlib.suppress(Exception):
            run = client.get_run(mv.run_id)
            out = {k: float(v) for k, v in run.data.metrics.items() if k in VERSION_METRICS}
    return out


def _info(client: Any, mv: Any, aliases: dict[str, str]) -> VersionInfo:
    return VersionInfo(
        version=str(mv.version),
        aliases=sorted(a for a, v in aliases.items() if str(v) == str(mv.version)),
        metrics=_version_metrics(client, mv),
        created=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
        run_id=mv.run_id,
        best_model=(mv.tags or {}).get("best_model"),
        tags=dict(mv.tags or {}),
    )


def list_versions(settings: Settings) -> list[VersionInfo]:
    """All versions of the registered model, newest first. No model yet → empty list."""
    from mlflow.exceptions import MlflowException

    with mlflow_calls(settings) as client:
        try:
            aliases = dict(client.get_registered_model(settings.model_name).aliases or {})
        except MlflowException as e:
            if _not_found(e):
                return []
            raise
        versions = _search_versions(client, settings.model_name)
        infos = [_info(client, mv, aliases) for mv in versions]
    return sorted(infos, key=lambda i: int(i.version), reverse=True)


@dataclass(frozen=True)
class PromotionDecision:
    allowed: bool
    reason: str
    alias: str
    candidate: str
    candidate_metrics: dict[str, float]
    current: str | None
    current_metrics: dict[str, float]


def _fmt(m: dict[str, float], key: str) -> str:
    v = m.get(key)
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.4f}"


def compare(candidate: dict[str, float], current: dict[str, float]) -> tuple[bool, str]:
    """(allowed, reason): the gate's rule on two versions' holdout metrics."""
    cm, pm = candidate.get("mase"), current.get("mase")
    if cm is None or not math.isfinite(cm):
        return False, "the candidate has no holdout MASE to compare"
    if pm is not None and math.isfinite(pm) and cm > pm:
        return False, f"its holdout MASE {cm:.4f} is worse (higher) than {pm:.4f}"
    cf, pf = candidate.get("f1"), current.get("f1")
    if cf is not None and pf is not None and cf < pf - F1_TOLERANCE:
        return False, f"its holdout F1 {cf:.3f} is worse than {pf:.3f} (tolerance {F1_TOLERANCE})"
    return True, "its holdout metrics are at least as good"


def check_promotion(
    settings: Settings, version: str, alias: str | None = None
) -> PromotionDecision:
    alias = alias or settings.model_alias
    mv = get_version(settings, version)
    with mlflow_calls(settings) as client:
        cand = _version_metrics(client, mv)
    current = resolve_alias(settings, alias)
    if current is None:
        return PromotionDecision(
            True, f"no version has alias {alias!r} yet", alias, str(version), cand, None, {}
        )
    if current == str(version):
        return PromotionDecision(
            True,
            f"version {version} already has alias {alias!r}",
            alias,
            str(version),
            cand,
            current,
            cand,
        )
    with mlflow_calls(settings) as client:
        cur = _version_metrics(client, client.get_model_version(settings.model_name, current))
    allowed, why = compare(cand, cur)
    return PromotionDecision(allowed, why, alias, str(version), cand, current, cur)


class PromotionRefused(ModelError):
    """The gate refused: the candidate is worse than the version behind the alias."""


def promote(
    settings: Settings, version: str, alias: str | None = None, force: bool = False
) -> PromotionDecision:
    """Point ``alias`` at ``version`` if the gate allows it (or ``force``); else raise
    ``PromotionRefused`` with both versions' numbers."""
    d = check_promotion(settings, version, alias)
    if not d.allowed and not force:
        raise PromotionRefused(
            f"refusing to move {d.alias!r} from version {d.current} to version {d.candidate}: "
            f"{d.reason}. Candidate v{d.candidate}: MASE {_fmt(d.candidate_metrics, 'mase')}, "
            f"F1 {_fmt(d.candidate_metrics, 'f1')}; current v{d.current}: "
            f"MASE {_fmt(d.current_metrics, 'mase')}, F1 {_fmt(d.current_metrics, 'f1')}",
            fix=f"`iot-mlops promote {d.candidate} --alias {d.alias} --force` to promote anyway",
        )
    with mlflow_calls(settings) as client:
        past = _alias_history(client, settings.model_name, d.alias)
        _move_alias(
            client, settings.model_name, d.alias, str(version),
            history.promoted(past, d.current, str(version)),
        )  # fmt: skip
    return d


def set_alias(settings: Settings, alias: str, version: str) -> None:
    """Point ``alias`` at ``version`` without the gate (e.g. ``challenger``), keeping its
    history like a promotion."""
    current = resolve_alias(settings, alias)
    with mlflow_calls(settings) as client:
        past = _alias_history(client, settings.model_name, alias)
        _move_alias(
            client, settings.model_name, alias, str(version),
            history.promoted(past, current, str(version)),
        )  # fmt: skip


def rollback(settings: Settings, alias: str | None = None) -> tuple[str, str]:
    """Point ``alias`` back at the version that held it before the current one (no gate: it
    served before). Returns (from, to); the detectors swap at their next alias poll."""
    alias = alias or settings.model_alias
    current = resolve_alias(settings, alias)
    if current is None:
        raise ModelError(
            f"no version of {settings.model_name!r} has alias {alias!r}: nothing to roll back",
            fix="`iot-mlops promote VERSION` sets it",
        )
    with mlflow_calls(settings) as client:
        target, rest = history.rolled_back(
            _alias_history(client, settings.model_name, alias), current
        )
    if target is None:
        raise ModelError(
            f"no version held {settings.model_name}@{alias} before version {current}",
            fix="`iot-mlops models` lists the versions; `iot-mlops promote VERSION --force` "
            "moves the alias to any of them",
        )
    get_version(settings, target)  # still registered, or a clear error naming the others
    with mlflow_calls(settings) as client:
        _move_alias(client, settings.model_name, alias, target, rest)
    return current, target


def _alias_history(client: Any, name: str, alias: str) -> list[str]:
    return history.parse(client.get_registered_model(name).tags.get(history.tag_key(alias)))


def _move_alias(client: Any, name: str, alias: str, version: str, past: list[str]) -> None:
    client.set_registered_model_alias(name, alias, version)
    client.set_registered_model_tag(name, history.tag_key(alias), history.render(past))


def set_version_tags(settings: Settings, version: str, tags: dict[str, Any]) -> None:
    with mlflow_calls(settings) as client:
        for k, v in tags.items():
            client.set_model_version_tag(settings.model_name, str(version), k, str(v))
