"""Running the CLI in-process against the session's services, each run in its own MLflow
experiment and registered model so tests never see each other's versions."""

from __future__ import annotations

import uuid
from typing import Any

from typer.testing import CliRunner

from iot_mlops.cli import app
from iot_mlops.config import Settings

runner = CliRunner()


def run_cli(args: list[str], env: dict[str, str]) -> Any:
    # Wide enough that rich does not wrap messages across lines.
    result = runner.invoke(app, args, env={"COLUMNS": "250", **env})
    assert "Traceback" not in result.output, result.output
    return result


def isolated(base: Settings, prefix: str, **update: Any) -> Settings:
    """``base`` with a fresh experiment and model name (and any other ``update``)."""
    tag = uuid.uuid4().hex[:8]
    names = {"experiment_name": f"exp-{prefix}-{tag}", "model_name": f"model-{prefix}-{tag}"}
    return base.model_copy(update={**names, **update})


def cli_env(s: Settings, kafka: bool = True) -> dict[str, str]:
    """The environment that points the CLI at ``s``'s services, experiment and model."""
    env = {
        "MLFLOW_TRACKING_URI": s.mlflow_tracking_uri,
        "IOT_MLOPS_EXPERIMENT_NAME": s.experiment_name,
        "IOT_MLOPS_MODEL_NAME": s.model_name,
    }
    if kafka:
        env["KAFKA_BOOTSTRAP_SERVERS"] = s.kafka_bootstrap_servers
    return env
