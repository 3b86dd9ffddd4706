"""The broker's ``server.properties``, one definition for the embedded stack (kafka/stack.py)
and the Compose deployment (security/deploy.py): a single KRaft node, and on a secure
deployment SASL (SCRAM-SHA-512) over TLS with the StandardAuthorizer."""

from __future__ import annotations

from pathlib import Path

SCRAM = "SCRAM-SHA-512"
_SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"


def single_node(log_dirs: str, message_max_bytes: int) -> dict[str, str]:
    """One node that is broker and controller: internal topics must not wait for replicas
    that never come (or the detector's transactions time out)."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.listener.names": "CONTROLLER",
        "log.dirs": log_dirs,
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "message.max.bytes": str(message_max_bytes),
    }


def message_limit(max_reading_bytes: int) -> int:
    """The broker's ``message.max.bytes``: room for a batch of the largest readings, and
    never below Kafka's default."""
    return max(max_reading_bytes * 64, 1_048_588)


def scram_jaas(user: str, password: str) -> str:
    return f'{_SCRAM_MODULE} required username="{user}" password="{password}";'


def sasl_ssl(
    listeners: list[str],
    admin_password: str,
    controller_password: str,
    keystore: Path | str,
    truststore: Path | str,
) -> dict[str, str]:
    """SASL SCRAM-SHA-512 over TLS on every listener in ``listeners`` (the first carries the
    broker's own traffic, as admin), SASL PLAIN on the controller listener (KRaft controllers
    cannot use SCRAM: its credentials live in the metadata they serve; a PLAINTEXT one would
    need ANONYMOUS as super user, which lets anyone reaching it write ACLs), and ACLs enforced
    with no super user but admin. ``keystore``: the server's key and chain in one PEM file."""
    props = {
        "inter.broker.listener.name": listeners[0],
        "listener.security.protocol.map": ",".join(
            ["CONTROLLER:SASL_PLAINTEXT", *(f"{n}:SASL_SSL" for n in listeners)]
        ),
        "sasl.mechanism.inter.broker.protocol": SCRAM,
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": f"{_PLAIN_MODULE} required "
        f'username="admin" password="{controller_password}" user_admin="{controller_password}";',
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore),
        # The broker is its own client (inter-broker listener): it checks the server too.
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(truststore),
        "ssl.client.auth": "none",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": "User:admin",
    }
    for name in listeners:
        prefix = f"listener.name.{name.lower()}"
        props[f"{prefix}.sasl.enabled.mechanisms"] = SCRAM
        props[f"{prefix}.{SCRAM.lower()}.sasl.jaas.config"] = scram_jaas("admin", admin_password)
    return props


def scram_user_arg(user: str, password: str) -> str:
    """A ``kafka-storage format --add-scram`` value: the user exists from the first start."""
    return f"{SCRAM}=[name={user},password=" + password + "]"


def render(props: dict[str, str]) -> str:
    return "\n".join([*(f"{k}={v}" for k, v in props.items()), ""])
