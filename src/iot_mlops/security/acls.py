"""Kafka ACLs per principal: each may do what its part of the pipeline needs and nothing
else (Kafka's StandardAuthorizer denies whatever no ACL allows). ``grants`` is the pure
policy, ``apply`` writes it with the admin principal."""

from __future__ import annotations

from dataclasses import dataclass

from iot_mlops.config import Settings

# Group ids the project's throwaway readers use (kafka/clients.py, data/collect.py): reads
# that never commit still look their group up.
READER_GROUP_PREFIXES = ("reader-", "probe-")
COLLECT_GROUP_PREFIX = "iot-mlops-collect"


@dataclass(frozen=True)
class Grant:
    principal: str  # a Kafka user name
    resource: str  # "topic" | "group" | "transactional_id"
    name: str
    prefixed: bool
    operations: tuple[str, ...]  # "READ", "WRITE", "DESCRIBE"


def _topic(user: str, name: str, *ops: str) -> Grant:
    return Grant(user, "topic", name, False, ops)


def grants(s: Settings) -> list[Grant]:
    """The whole policy for the topics and group of ``s``."""
    out = _topic_grants(s)
    for user, prefixes in (
        ("detector", (s.consumer_group, *READER_GROUP_PREFIXES)),
        ("reader", (COLLECT_GROUP_PREFIX, *READER_GROUP_PREFIXES)),
    ):
        out += [Grant(user, "group", p, True, ("READ",)) for p in prefixes]
    # The detector's transactional ids are `<consumer_group>-<replica>` (detector/transaction.py).
    out.append(Grant("detector", "transactional_id", s.consumer_group, True, ("WRITE", "DESCRIBE")))
    return out


def _topic_grants(s: Settings) -> list[Grant]:
    outputs = [t for t in (s.anomalies_topic, s.dlq_topic, s.scores_topic) if t]
    return [
        _topic("device", s.input_topic, "WRITE", "DESCRIBE"),
        _topic("reader", s.input_topic, "READ", "DESCRIBE"),
        _topic("detector", s.input_topic, "READ", "DESCRIBE"),
        *(_topic("detector", t, "WRITE", "DESCRIBE") for t in outputs),
    ]


def apply(admin_settings: Settings, policy: list[Grant], timeout_s: float = 30.0) -> int:
    """Create the ACLs of ``policy`` (idempotent: Kafka keeps one copy of each) and wait until
    the broker enforces them: the controller answers before the broker's authorizer has the
    new metadata (60-80 ms here), and a client that connects in between is refused. Returns
    how many bindings were written."""
    from confluent_kafka import KafkaException

    from iot_mlops.errors import ServiceError
    from iot_mlops.kafka import clients

    bindings = [_binding(g, op) for g in policy for op in g.operations]
    admin = clients.admin(admin_settings)  # held until every future is done
    try:
        for f in admin.create_acls(bindings, request_timeout=timeout_s).values():
            f.result(timeout=timeout_s)
        _wait_enforced(admin, bindings, timeout_s)
    except (KafkaException, TimeoutError) as e:
        detail = e.args[0].str() if isinstance(e, KafkaException) and e.args else e
        raise ServiceError(
            f"writing the Kafka ACLs failed: {detail}",
            fix="check the broker's log (`iot-mlops stack status` names it) and run "
            "`iot-mlops stack up --secure` (Compose: `docker compose up -d`) again",
        ) from None
    return len(bindings)


def _binding(g: Grant, op: str):  # -> AclBinding
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    kinds = {
        "topic": ResourceType.TOPIC,
        "group": ResourceType.GROUP,
        "transactional_id": ResourceType.TRANSACTIONAL_ID,
    }
    pattern = ResourcePatternType.PREFIXED if g.prefixed else ResourcePatternType.LITERAL
    return AclBinding(
        kinds[g.resource], g.name, pattern, f"User:{g.principal}", "*",
        AclOperation[op], AclPermissionType.ALLOW,
    )  # fmt: skip


def _wait_enforced(admin, bindings: list, timeout_s: float) -> None:
    """Until the broker lists every binding: it answers from the authorizer that enforces
    them."""
    import time

    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    every = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
        AclOperation.ANY, AclPermissionType.ANY,
    )  # fmt: skip
    wanted = set(bindings)
    deadline = time.monotonic() + timeout_s
    while True:
        listed = set(admin.describe_acls(every, request_timeout=timeout_s).result(timeout_s))
        missing = wanted - listed
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(missing)} ACL bindings not enforced after {timeout_s:g} s")
        time.sleep(0.05)
