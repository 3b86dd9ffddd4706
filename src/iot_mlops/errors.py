"""Error types that reach the user as a message (never a traceback).

Each names the thing that failed and the command that fixes it; the CLI prints it and exits
with ``exit_code``.
"""

from __future__ import annotations


class IotMlopsError(Exception):
    """Base class: a failure we can explain to the user."""

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message


class ConfigError(IotMlopsError):
    """Bad user input: a missing file, an invalid option value (exit code 2)."""

    exit_code = 2


class ServiceError(IotMlopsError):
    """A service (Kafka, MLflow, Prometheus) is unreachable, unhealthy or missing."""


class ModelError(IotMlopsError):
    """A model or model version is missing, invalid or unusable."""
