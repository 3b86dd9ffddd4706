"""MLflow's basic-auth users, created by its admin."""

from __future__ import annotations

from iot_mlops.config import Settings


def ensure_users(
    admin: Settings, passwords: dict[str, str], update_existing: bool = False
) -> list[str]:
    """Create every user of ``passwords`` but admin that does not exist yet (and with
    ``update_existing`` set the password of those that do: rotation); returns those created.
    ``admin``: settings authenticated as MLflow's admin."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    from iot_mlops.lifecycle.registry import mlflow_env

    made = []
    with mlflow_env(**admin.mlflow_client_env()):
        client = AuthServiceClient(admin.mlflow_tracking_uri)
        for user, password in passwords.items():
            if user == "admin":
                continue
            try:
                client.create_user(user, password)
                made.append(user)
            except MlflowException as e:
                if getattr(e, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise
                if update_existing:
                    client.update_user_password(user, password)
    return made
