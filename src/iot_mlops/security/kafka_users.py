"""Kafka's SCRAM users, written by the admin principal: the Compose deployment sets every
password from .env on each `docker compose up`, so changing one there rotates it."""

from __future__ import annotations

from iot_mlops.config import Settings
from iot_mlops.errors import ServiceError

# Kafka's own tools use 4096; more iterations cost each login, not each message.
ITERATIONS = 8192


def upsert(admin_settings: Settings, passwords: dict[str, str], timeout_s: float = 30.0) -> int:
    """Create or update the SCRAM-SHA-512 user of each entry; returns how many."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    from iot_mlops.kafka import clients

    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, ITERATIONS)
    changes = [UserScramCredentialUpsertion(u, info, pw.encode()) for u, pw in passwords.items()]
    if not changes:
        return 0
    admin = clients.admin(admin_settings)
    try:
        futures = admin.alter_user_scram_credentials(changes, request_timeout=timeout_s)
        for f in futures.values():
            f.result(timeout=timeout_s)
    except KafkaException as e:
        raise ServiceError(
            f"setting the Kafka SCRAM users failed: {e.args[0].str() if e.args else e}",
            fix="check that the admin principal's password (KAFKA_ADMIN_PASSWORD) is the one "
            "the broker was formatted with, and the broker's log",
        ) from None
    for user, pw in passwords.items():
        _wait_login(admin_settings, user, pw, timeout_s)
    return len(changes)


def _wait_login(admin_settings: Settings, user: str, password: str, timeout_s: float) -> None:
    """Until ``user`` logs in with ``password``: the broker applies the controller's change a
    moment after the answer, and a client started in between would be refused."""
    import time

    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    from pydantic import SecretStr

    from iot_mlops.kafka import clients

    s = admin_settings.model_copy(
        update={"kafka_sasl_username": user, "kafka_sasl_password": SecretStr(password)}
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            # Quiet: each refused try would print librdkafka's error on stderr.
            AdminClient({**s.kafka_common(), "logger": clients.KAFKA_LOGGER}).list_topics(timeout=2)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"Kafka user {user} cannot log in {timeout_s:g} s after its password was set",
                    fix="check the broker's log",
                ) from None
            time.sleep(0.1)
