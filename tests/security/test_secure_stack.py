"""The secure embedded stack (`stack up --secure`), for real: Kafka with SASL_SSL, SCRAM users
and ACLs per principal; MLflow with basic auth over https. Refusals are checked against the
running services, and the whole pipeline (simulate → collect → train → detect → anomalies) runs
with security on, each step as its own principal, so the secure path cannot rot."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest
from confluent_kafka import KafkaError, KafkaException
from detector_helpers import RunningDetector, anomalies, caught_up, wait_until
from mlflow.exceptions import MlflowException
from pydantic import SecretStr

from iot_mlops.config import Settings
from iot_mlops.data import simulate as sim
from iot_mlops.data.collect import collect
from iot_mlops.kafka import broker, clients
from iot_mlops.kafka.stack import KAFKA_LOG4J, Kafka, Stack, free_port
from iot_mlops.lifecycle.registry import mlflow_env
from iot_mlops.security.certs import write_file
from iot_mlops.security.deploy import DeployDirs, password_env, provision, write_secrets
from iot_mlops.training.pipeline import train

pytestmark = pytest.mark.integration

INTERVAL = 60
HOUR_MS = 3_600_000
T0 = 1_790_000_000_000 // (INTERVAL * 1000) * (INTERVAL * 1000)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    kafka_port = free_port()
    s = Settings(
        state_dir=tmp_path_factory.mktemp("secure-stack"),
        kafka_bootstrap_servers=f"127.0.0.1:{kafka_port}",
        kafka_port=kafka_port,
        kafka_controller_port=free_port(),
        mlflow_port=free_port(),
        input_partitions=3,
        sim_devices=3,
        sim_seed=5,
        sim_interval_s=INTERVAL,
    )
    st = Stack(s, with_prometheus=False, secure=True)
    try:
        st.up()
        yield st
    finally:
        st.down()


def _produce_error(s: Settings, topic: str) -> KafkaError | None:
    """The delivery error of one message to ``topic`` (None: delivered)."""
    errors: list[KafkaError | None] = []
    p = clients.producer(s, quiet=True, **{"message.timeout.ms": 10_000})
    p.produce(topic, b"{}", on_delivery=lambda err, _m: errors.append(err))
    p.flush(15)
    assert errors, "no delivery report within 15 s"
    return errors[0]


def _metadata_error(config: dict) -> KafkaError:
    from confluent_kafka.admin import AdminClient

    with pytest.raises(KafkaException) as e:
        AdminClient({**config, "logger": clients.KAFKA_LOGGER}).list_topics(timeout=5)
    return e.value.args[0]


def test_kafka_refuses_clients_without_valid_credentials(secure: Stack) -> None:
    s, admin = secure.user_settings, secure.s
    base = {"bootstrap.servers": s.kafka_bootstrap_servers}
    # The stack's own admin works (the fixture created topics and ACLs with it).
    assert s.input_topic in clients.admin(admin).list_topics(timeout=10).topics
    _metadata_error(base)  # PLAINTEXT against the TLS listener: no answer
    ca = str(secure.secrets.certs.ca)
    _metadata_error({**base, "security.protocol": "SSL", "ssl.ca.location": ca})
    wrong = admin.model_copy(update={"kafka_sasl_password": SecretStr("not-the-password")})
    _metadata_error(wrong.kafka_common())
    # The CA is checked: a client trusting only the system's CAs refuses the broker.
    _metadata_error({**admin.kafka_common(), "ssl.ca.location": "probe"})


def test_each_principal_is_held_to_its_topics(secure: Stack) -> None:
    s = secure.user_settings
    device, detector, reader = (secure.as_role(r) for r in ("device", "detector", "trainer"))
    denied = KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _produce_error(device, s.input_topic) is None  # devices write readings...
    assert _produce_error(device, s.anomalies_topic).code() == denied  # ...and nothing else
    # The detector cannot forge readings, the collector (trainer role) cannot write at all.
    assert _produce_error(detector, s.input_topic).code() == denied
    assert _produce_error(reader, s.input_topic).code() == denied
    assert _produce_error(reader, s.anomalies_topic).code() == denied
    # Nobody but admin sees topics it has no ACL on.
    assert s.anomalies_topic not in clients.admin(device).list_topics(timeout=10).topics


def test_mlflow_refuses_anonymous_and_wrong_users(secure: Stack) -> None:
    url, ca = secure.mlflow_url, str(secure.secrets.certs.ca)
    assert url.startswith("https://")
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(api, verify=ca).status_code == 401
    assert httpx.get(api, verify=ca, auth=("detector", "wrong")).status_code == 401
    password = secure.secrets.creds.mlflow["detector"]
    assert httpx.get(api, verify=ca, auth=("detector", password)).status_code == 200
    with pytest.raises(httpx.ConnectError):  # the server's certificate is checked
        httpx.get(api, auth=("detector", password))


def test_the_pipeline_runs_secure_and_the_detector_cannot_move_the_alias(
    secure: Stack, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    names = {"model_name": f"secure-{tag}", "experiment_name": f"secure-{tag}"}
    device = secure.as_role("device")
    trainer = secure.as_role("trainer").model_copy(
        update={
            **names,
            "train_models": "RecursiveTabular",
            "train_time_limit_s": 60,
            "context_length": 128,
        }
    )
    detector = secure.as_role("detector").model_copy(
        update={
            **names,
            "metrics_port": free_port(),
            "alias_poll_interval_s": 1.0,
            "context_length": 128,
        }
    )
    train_end = T0 + 48 * HOUR_MS
    report = sim.backfill_to_kafka(device, hours=48, end_ms=train_end, progress=False)
    assert report.failed == 0 and report.delivered == report.rows > 0
    history = tmp_path / "history.parquet"
    assert collect(trainer, history, progress=False).rows == report.rows
    result = train(trainer, history, promote=True)
    assert result.promotion is not None, result.promotion_error

    # The detector's MLflow user reads the model but cannot move its alias.
    with mlflow_env(**detector.mlflow_client_env()):
        client = mlflow.MlflowClient(detector.mlflow_tracking_uri)
        assert client.get_model_version_by_alias(detector.model_name, "production").version
        with pytest.raises(MlflowException, match=r"Permission denied|PERMISSION_DENIED"):
            client.set_registered_model_alias(detector.model_name, "production", result.version)

    live = sim.backfill_to_kafka(device, hours=3, end_ms=train_end + 3 * HOUR_MS, progress=False)
    assert live.failed == 0
    det = RunningDetector(detector)
    try:
        wait_until(lambda: caught_up(detector), 300, "the secure detector to catch up")
    finally:
        det.stop()
    scored = sum(
        smp.value
        for fam in det.detector.metrics.registry.collect()
        for smp in fam.samples
        if smp.name == "iot_readings_total" and smp.labels.get("outcome") == "scored"
    )
    assert scored > 0
    opened = anomalies(secure.s)  # read as admin: no other principal may read anomalies
    assert opened and {e["model_version"] for e in opened} == {result.version}


class ComposeBroker(Kafka):
    """The broker exactly as `iot-mlops deploy secrets` configures it for Compose (the same
    server.properties and admin SCRAM user at format), moved to local ports: only its
    addresses and data directory differ."""

    name = "compose-kafka"

    def __init__(self, admin: Settings, conf_dir: Path, internal_port: int) -> None:
        self.conf_dir, self.internal_port = conf_dir, internal_port
        super().__init__(admin)

    def write_config(self) -> Path:
        written = (self.conf_dir / "server.properties").read_text().splitlines()
        props = dict(line.split("=", 1) for line in written if line)
        h, s = "127.0.0.1", self.s
        internal, host = f"INTERNAL://{h}:{self.internal_port}", f"HOST://{h}:{s.kafka_port}"
        props.update(
            {
                "listeners": f"{internal},{host},CONTROLLER://{h}:{s.kafka_controller_port}",
                "advertised.listeners": f"{internal},{host}",
                "controller.quorum.voters": f"1@{h}:{s.kafka_controller_port}",
                "log.dirs": str(self.dir / "data"),
            }
        )
        path = self.dir / "server.properties"
        write_file(path, broker.render(props), private=True)
        (self.dir / "log4j2.properties").write_text(KAFKA_LOG4J.format(log=self.log))
        return path

    def prepare(self) -> None:
        props = self.write_config()
        tool = ("kafka.tools.StorageTool",)
        run = {"capture_output": True, "text": True, "check": True}
        cluster = subprocess.run(self._java(*tool, "random-uuid"), **run).stdout.strip()
        scram = (self.conf_dir / "admin-scram").read_text()
        subprocess.run(
            self._java(*tool, "format", "-t", cluster, "-c", str(props), "--add-scram", scram),
            **run,
        )


def test_the_compose_steps_secure_a_real_broker_and_rotate_passwords(
    secure: Stack, tmp_path: Path
) -> None:
    """`deploy secrets`, then the broker, then `deploy provision`, as Compose runs them:
    the broker starts from the written configuration with TLS and SCRAM, provision's ACLs hold
    the moment it returns, and provision with a changed password rotates it."""
    s0 = secure.user_settings
    dirs = DeployDirs(*(tmp_path / d for d in ("pki", "ca", "kafka", "mlflow")))
    users = ("admin", "controller", "detector", "device", "reader")
    env = {password_env("kafka", u): f"{u}-{uuid.uuid4().hex}" for u in users}
    # MLflow: the secure stack's own server and users (their passwords unchanged).
    env |= {
        password_env("mlflow", u): secure.secrets.creds.mlflow[u] for u in ("trainer", "detector")
    }
    write_secrets(dirs, env, s0, 1000, 10001)
    port = free_port()
    base = secure.s.model_copy(
        update={
            "state_dir": tmp_path / "state",
            "kafka_port": port,
            "kafka_controller_port": free_port(),
            "kafka_bootstrap_servers": f"127.0.0.1:{port}",
            "kafka_ssl_ca_location": str(dirs.ca / "ca.pem"),
        }
    )

    def as_user(user: str, password: str | None = None) -> Settings:
        pw = password or env[password_env("kafka", user)]
        return base.model_copy(
            update={"kafka_sasl_username": user, "kafka_sasl_password": SecretStr(pw)}
        )

    admin = as_user("admin")
    node = ComposeBroker(admin, dirs.kafka, free_port())
    node.start()
    try:
        node.wait_healthy(120)
        done = provision(admin, env)
        assert s0.input_topic in done[0], done
        denied = KafkaError.TOPIC_AUTHORIZATION_FAILED
        assert _produce_error(as_user("device"), s0.input_topic) is None
        assert _produce_error(as_user("detector"), s0.input_topic).code() == denied
        assert _produce_error(as_user("reader"), s0.anomalies_topic).code() == denied
        _metadata_error({"bootstrap.servers": base.kafka_bootstrap_servers})  # plaintext

        old = env[password_env("kafka", "device")]
        env[password_env("kafka", "device")] = f"rotated-{uuid.uuid4().hex}"
        provision(admin, env)
        assert _produce_error(as_user("device"), s0.input_topic) is None
        wait_until(
            lambda: not _logs_in(as_user("device", old)), 30, "the old password to be refused"
        )
    finally:
        node.stop()


def _logs_in(s: Settings) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({**s.kafka_common(), "logger": clients.KAFKA_LOGGER}).list_topics(timeout=5)
        return True
    except KafkaException:
        return False
