"""The principals of a secure stack and their credentials.

Kafka principals (SCRAM-SHA-512 users) and MLflow users, each with its own random password,
kept in one file readable by its owner only. A *role* is what a person or process runs as: the
Kafka principal and the MLflow user it authenticates with (``iot-mlops stack env ROLE``).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from iot_mlops.config import Settings
from iot_mlops.security.certs import CertFiles, make_certs, write_file

CREDENTIALS_FILE = "credentials.json"

# Kafka principals: admin is the super user (stack tooling: topics, ACLs, evaluate's own
# topics); the others get the ACLs of security/acls.py.
KAFKA_USERS = ("admin", "detector", "device", "reader")
# MLflow users: admin manages users; trainer registers versions and moves aliases; detector
# reads (the default permission), so it cannot move an alias.
MLFLOW_USERS = ("admin", "trainer", "detector")


@dataclass(frozen=True)
class Role:
    kafka_user: str
    mlflow_user: str | None


ROLES = {
    "admin": Role("admin", "admin"),  # stack tooling, `evaluate` (it creates its own topics)
    "detector": Role("detector", "detector"),  # `detect`
    "device": Role("device", None),  # `simulate`, real devices: write readings only
    "trainer": Role("reader", "trainer"),  # `collect`, `train`, `promote`, `models`
}


@dataclass(frozen=True)
class Credentials:
    path: Path
    kafka: dict[str, str]
    mlflow: dict[str, str]

    controller: str  # the broker's own login on its controller listener (SASL PLAIN)
    mlflow_secret_key: str  # signs MLflow's session and CSRF tokens

    @classmethod
    def load_or_create(cls, path: Path) -> Credentials:
        """The stack's credentials, made on first use (random, 0600)."""
        if path.exists():
            data = json.loads(path.read_text())
            return cls(
                path, dict(data["kafka"]), dict(data["mlflow"]), data["controller"],
                data["mlflow_secret_key"],
            )  # fmt: skip
        creds = cls(
            path,
            {u: secrets.token_urlsafe(24) for u in KAFKA_USERS},
            {u: secrets.token_urlsafe(24) for u in MLFLOW_USERS},
            secrets.token_urlsafe(24),
            secrets.token_urlsafe(32),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "kafka": creds.kafka, "mlflow": creds.mlflow, "controller": creds.controller,
            "mlflow_secret_key": creds.mlflow_secret_key,
        }  # fmt: skip
        write_file(path, json.dumps(data, indent=2), private=True)
        return creds


# Settings field → the environment variable that sets it (config.py).
ENV_NAMES = {
    "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "kafka_security_protocol": "IOT_MLOPS_KAFKA_SECURITY_PROTOCOL",
    "kafka_sasl_mechanism": "IOT_MLOPS_KAFKA_SASL_MECHANISM",
    "kafka_sasl_username": "IOT_MLOPS_KAFKA_SASL_USERNAME",
    "kafka_sasl_password": "IOT_MLOPS_KAFKA_SASL_PASSWORD",
    "kafka_ssl_ca_location": "IOT_MLOPS_KAFKA_SSL_CA_LOCATION",
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
    "mlflow_tracking_server_cert_path": "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "mlflow_tracking_username": "MLFLOW_TRACKING_USERNAME",
    "mlflow_tracking_password": "MLFLOW_TRACKING_PASSWORD",
}


def role_fields(
    role: str, creds: Credentials, ca: Path, kafka: str, mlflow_uri: str
) -> dict[str, str]:
    """The settings that make every iot-mlops command run as ``role`` against the secure
    stack at ``kafka`` / ``mlflow_uri``, trusting ``ca`` (keys: Settings fields)."""
    r = ROLES[role]
    out = {
        "kafka_bootstrap_servers": kafka,
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": r.kafka_user,
        "kafka_sasl_password": creds.kafka[r.kafka_user],
        "kafka_ssl_ca_location": str(ca),
        "mlflow_tracking_uri": mlflow_uri,
        "mlflow_tracking_server_cert_path": str(ca),
    }
    if r.mlflow_user is not None:
        out["mlflow_tracking_username"] = r.mlflow_user
        out["mlflow_tracking_password"] = creds.mlflow[r.mlflow_user]
    return out


@dataclass(frozen=True)
class StackSecrets:
    """A secure stack's credentials and certificates, under ``<state_dir>/secrets``."""

    root: Path
    creds: Credentials
    certs: CertFiles

    @classmethod
    def path(cls, state_dir: Path) -> Path:
        return state_dir.resolve() / "secrets"

    @classmethod
    def exist(cls, state_dir: Path) -> bool:
        return (cls.path(state_dir) / CREDENTIALS_FILE).exists()

    @classmethod
    def ensure(cls, state_dir: Path, hosts: list[str]) -> StackSecrets:
        """Load them, making whatever is missing (first `stack up --secure`)."""
        root = cls.path(state_dir)
        creds = Credentials.load_or_create(root / CREDENTIALS_FILE)
        certs = CertFiles.under(root)
        if not certs.exist():
            certs = make_certs(root, hosts)
        return cls(root, creds, certs)

    def settings_for(self, settings: Settings, role: str, mlflow_uri: str) -> Settings:
        """``settings`` authenticated as ``role`` against this stack."""
        fields = role_fields(
            role, self.creds, self.certs.ca, settings.kafka_bootstrap_servers, mlflow_uri
        )
        hidden = {"kafka_sasl_password", "mlflow_tracking_password"}
        return settings.model_copy(
            update={k: SecretStr(v) if k in hidden else v for k, v in fields.items()}
        )
