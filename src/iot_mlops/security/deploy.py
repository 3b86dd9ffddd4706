"""The two one-shot steps of the secure Compose deployment (docker-compose.yml).

``write_secrets`` (service ``secrets-init``, before Kafka and MLflow start): a CA and a server
certificate, made once and kept in their own volume; the broker's ``server.properties`` with
the passwords of .env; and the files each container mounts, each volume holding only what its
container needs. ``provision`` (service ``provision``, once both are healthy): the topics, the
SCRAM users, the ACLs and MLflow's users, all set from .env on every `docker compose up`, so
changing a password there and running `up` again rotates it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from iot_mlops.config import Settings
from iot_mlops.errors import ConfigError, ServiceError
from iot_mlops.kafka import broker
from iot_mlops.security.certs import CertFiles, make_certs, write_file
from iot_mlops.security.credentials import KAFKA_USERS, MLFLOW_USERS

# The names the containers reach the servers by, and localhost for clients on the host.
COMPOSE_HOSTS = ["kafka", "mlflow", "localhost", "127.0.0.1"]
# The broker's listeners in Compose: INTERNAL for the containers, HOST published on 127.0.0.1.
LISTENERS = {"INTERNAL": ("kafka", 29092), "HOST": ("localhost", 9092)}
CONTROLLER_PORT = 9093
KAFKA_DATA = "/var/lib/kafka/data"


def password_env(system: str, user: str) -> str:
    """The .env variable holding ``user``'s password on ``system`` ("kafka" or "mlflow")."""
    return f"{system.upper()}_{user.upper()}_PASSWORD"


def passwords_from(env: dict[str, str], system: str, users: list[str]) -> dict[str, str]:
    missing = [password_env(system, u) for u in users if not env.get(password_env(system, u))]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not set",
            fix="set them in .env (see .env.example) and run `docker compose up -d` again",
        )
    return {u: env[password_env(system, u)] for u in users}


@dataclass(frozen=True)
class DeployDirs:
    """One volume each: only secrets-init sees the CA key; each server sees only its key."""

    pki: Path  # the CA and its key (to issue a new server certificate: rotation)
    ca: Path  # ca.pem alone: every client mounts it
    kafka: Path  # the broker's configuration and keystore: Kafka alone mounts it
    mlflow: Path  # MLflow's key and certificate: MLflow alone mounts it


def broker_properties(
    dirs: DeployDirs, admin_password: str, controller_password: str, s: Settings
) -> dict[str, str]:
    """The Compose broker: one KRaft node named ``kafka``, SASL_SSL on both listeners."""
    listeners = ",".join(f"{n}://:{port}" for n, (_h, port) in LISTENERS.items())
    return {
        **broker.single_node(KAFKA_DATA, broker.message_limit(s.max_message_bytes)),
        "controller.quorum.voters": f"1@kafka:{CONTROLLER_PORT}",
        "listeners": f"{listeners},CONTROLLER://:{CONTROLLER_PORT}",
        "advertised.listeners": ",".join(f"{n}://{h}:{p}" for n, (h, p) in LISTENERS.items()),
        **broker.sasl_ssl(
            list(LISTENERS), admin_password, controller_password,
            dirs.kafka / "keystore.pem", dirs.kafka / "ca.pem",
        ),
    }  # fmt: skip


def admin_client_properties(dirs: DeployDirs, admin_password: str) -> dict[str, str]:
    """For Kafka's own tools in the broker's container (its healthcheck)."""
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": broker.SCRAM,
        "sasl.jaas.config": broker.scram_jaas("admin", admin_password),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(dirs.kafka / "ca.pem"),
    }


def write_secrets(
    dirs: DeployDirs, env: dict[str, str], s: Settings, kafka_uid: int, mlflow_uid: int
) -> list[Path]:
    """Write every file of ``dirs`` (the CA only when there is none yet); returns them."""
    pw = passwords_from(env, "kafka", ["admin", "controller"])
    certs = CertFiles.under(dirs.pki)
    if not certs.exist():
        certs = make_certs(dirs.pki, COMPOSE_HOSTS)
    for d in (dirs.ca, dirs.kafka, dirs.mlflow):
        d.mkdir(parents=True, exist_ok=True)
    kafka_conf = broker_properties(dirs, pw["admin"], pw["controller"], s)
    files = {
        dirs.ca / "ca.pem": (certs.ca.read_bytes(), False, None),
        dirs.kafka / "ca.pem": (certs.ca.read_bytes(), False, kafka_uid),
        dirs.kafka / "keystore.pem": (certs.keystore.read_bytes(), True, kafka_uid),
        dirs.kafka / "server.properties": (broker.render(kafka_conf), True, kafka_uid),
        dirs.kafka / "admin-scram": (broker.scram_user_arg("admin", pw["admin"]), True, kafka_uid),
        dirs.kafka / "client.properties": (
            broker.render(admin_client_properties(dirs, pw["admin"])),
            True,
            kafka_uid,
        ),
        dirs.mlflow / "ca.pem": (certs.ca.read_bytes(), False, mlflow_uid),
        dirs.mlflow / "server-cert.pem": (certs.cert.read_bytes(), False, mlflow_uid),
        dirs.mlflow / "server-key.pem": (certs.key.read_bytes(), True, mlflow_uid),
    }
    for path, (data, private, uid) in files.items():
        write_file(path, data, private=private)
        # As root (Compose runs this step so), hand each file to its server's user.
        if uid is not None and os.geteuid() == 0:
            shutil.chown(path, uid, uid)
    return list(files)


def provision(admin: Settings, env: dict[str, str]) -> list[str]:
    """Topics, SCRAM users, ACLs and MLflow users from ``env``; returns what it did."""
    from iot_mlops.kafka.topics import ensure_topics
    from iot_mlops.security import acls, kafka_users
    from iot_mlops.security.mlflow_users import ensure_users

    kafka_pw = passwords_from(env, "kafka", [u for u in KAFKA_USERS if u != "admin"])
    mlflow_pw = passwords_from(env, "mlflow", [u for u in MLFLOW_USERS if u != "admin"])
    from mlflow.exceptions import MlflowException

    created = ensure_topics(admin)
    n_users = kafka_users.upsert(admin, kafka_pw)
    n_acls = acls.apply(admin, acls.grants(admin))
    try:
        made = ensure_users(admin, mlflow_pw, update_existing=True)
    except MlflowException as e:
        raise ServiceError(
            f"creating MLflow's users at {admin.mlflow_tracking_uri} failed: {e.message}",
            fix="check MLFLOW_TRACKING_USERNAME=admin and MLFLOW_TRACKING_PASSWORD "
            "(MLFLOW_ADMIN_PASSWORD in .env) and MLflow's log",
        ) from None
    return [
        f"topics created: {', '.join(created) or 'none (all exist)'}",
        f"Kafka SCRAM users set: {n_users} ({', '.join(kafka_pw)})",
        f"Kafka ACL bindings: {n_acls}",
        f"MLflow users: {', '.join(mlflow_pw)} ({', '.join(made) or 'none'} created)",
    ]
