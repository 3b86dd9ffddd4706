"""Fault 7, security basics: the embedded stack listens on loopback only; no secret or
default password is in the repository or the Compose file; Kafka client settings for
SASL/SSL reach every client the project builds (detector, state rebuild, simulator, collector,
admin)."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from reliability_helpers import REPO, record

from iot_mlops.config import Settings
from iot_mlops.kafka.stack import Stack
from iot_mlops.scoring.calibrate import Calibration


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)  # Java's dual-stack sockets: ::ffff:127.0.0.1
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


def test_embedded_stack_listens_on_loopback_only(stack: Stack) -> None:
    from prometheus_client import CollectorRegistry

    from iot_mlops.detector.http import serve
    from iot_mlops.kafka.stack import free_port

    pids: dict[int, str] = {}
    for svc in stack.services:
        pid = svc.pid()
        assert pid is not None, f"{svc.name} is not running"
        for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            pids[p.pid] = svc.name
    # The detector's /metrics and /healthz server, with default settings.
    server = serve(Settings().metrics_host, free_port(), CollectorRegistry(), lambda: {})
    try:
        listening = [
            (pids.get(c.pid, "detector-http"), c.laddr.ip, c.laddr.port)
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
            and (c.pid in pids or c.laddr.port == server.server_address[1])
        ]
    finally:
        server.shutdown()
        server.server_close()
    exposed = [x for x in listening if not _loopback(x[1])]
    services = sorted({name for name, _, _ in listening})
    record(
        "security_listeners",
        {"listening_sockets": len(listening), "non_loopback": len(exposed), "services": services},
    )
    assert {"kafka", "mlflow", "detector-http"} <= set(services), listening
    assert not exposed, f"listening on a non-loopback address: {exposed}"


# --- secrets ------------------------------------------------------------------------------

SECRET_NAME = r"(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)"
ASSIGNMENT = re.compile(
    rf"""(?ix) \b[\w.-]*{SECRET_NAME}[\w.-]* \s*
        (?: :\s*[A-Za-z_][\w\[\]|.\ ]*?\s*= | = | : ) \s*  # `x: type = v`, `x = v`, `x: v`
        (?P<q>["']?) (?P<value>[^\s"'#,;)}}]+) (?P=q)"""
)
PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----")
AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
AWS_SECRET = re.compile(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{40}")
URL_CREDENTIALS = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:(?P<pw>[^/\s@]+)@")
DEFAULT_PASSWORDS = {"admin", "password", "changeme", "secret", "mlflow", "postgres", "root"}


def _allowed(value: str, quoted: bool, code: bool) -> bool:
    v = value.strip()
    if not v or v.startswith(("$", "<")) or v.lower().startswith("change-me"):
        return True  # empty, a ${VAR} reference, a <placeholder>, a .env.example placeholder
    if v.lower() in DEFAULT_PASSWORDS or quoted:
        return v in {"***", "..."}
    # Unquoted in code: an identifier, attribute access or call is a reference, not a literal.
    return code and bool(re.fullmatch(r"[A-Za-z_][\w.\[\]()]*", v))


def _looks_secret(v: str) -> bool:
    return v.lower() in DEFAULT_PASSWORDS or (
        len(v) >= 12 and bool(re.search(r"\d", v)) and bool(re.search(r"[A-Za-z]", v))
    )


def find_secrets(path: str, text: str) -> list[str]:
    """Password-like assignments with literal values, private keys, AWS keys, credentials in
    URLs."""
    code = path.endswith(".py")
    hits = []
    for n, line in enumerate(text.splitlines(), start=1):
        where = f"{path}:{n}"
        if PRIVATE_KEY.search(line):
            hits.append(f"{where}: private key")
        if AWS_KEY_ID.search(line) or AWS_SECRET.search(line):
            hits.append(f"{where}: AWS key")
        for m in URL_CREDENTIALS.finditer(line):
            if not _allowed(m.group("pw"), False, False):
                hits.append(f"{where}: credentials in a URL")
        prose = path.endswith(".md") or line.lstrip().startswith(("#", "//"))
        for m in ASSIGNMENT.finditer(line):
            value = m.group("value")
            if _allowed(value, bool(m.group("q")), code):
                continue
            # In comments and docs ("secrets: never commit them") only values that look like
            # a real credential count: a default password, or a long mix of letters and digits.
            if prose and not _looks_secret(value):
                continue
            hits.append(f"{where}: {m.group(0)[:60]!r}")
    return hits


def test_the_scanner_finds_planted_secrets() -> None:
    planted = [
        ("a.py", "password = 'hunter2'", 1),
        ("a.py", 'token: str = "ghp_0123456789abcdefghijklmnop"', 1),
        ("a.yml", 'POSTGRES_PASSWORD: "s3cr3t-value"', 1),
        ("a.yml", "POSTGRES_PASSWORD: s3cr3tvalue", 1),
        (".env", "GF_SECURITY_ADMIN_PASSWORD=admin", 1),
        ("a.yml", "api_key: 0123456789abcdef", 1),
        ("key.pem", "-----BEGIN RSA PRIVATE KEY-----", 1),
        ("a.ini", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE", 2),
        ("a.yml", "uri: postgresql://mlflow:mlflow@db:5432/mlflow", 1),
        ("a.yml", "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it}", 0),
        (".env.example", "POSTGRES_PASSWORD=change-me-postgres", 0),
        ("a.py", "password=settings.db_password", 0),
        ("a.yml", "sasl.password: ${KAFKA_PASSWORD}", 0),
        (".env.example", "# .env holds secrets: never commit it.", 0),
        ("a.yml", "# password: Zx81kq0Pw7mNq2", 1),
        ("README.md", "log in with password: admin", 1),
    ]
    for path, line, n in planted:
        assert len(find_secrets(path, line)) == n, (line, find_secrets(path, line))


def _repo_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    return [REPO / p for p in out.split("\0") if p and (REPO / p).is_file()]


def test_no_secret_or_default_password_in_the_repo() -> None:
    files = _repo_files()
    assert any(f.name == "docker-compose.yml" for f in files)
    hits = []
    scanned = 0
    for f in files:
        if f.suffix in {".png", ".jpg", ".parquet", ".pkl", ".jar", ".gz", ".ico"}:
            continue
        if f == Path(__file__):  # this scanner's own planted examples
            continue
        try:
            text = f.read_text()
        except UnicodeDecodeError:
            continue
        scanned += 1
        hits += find_secrets(str(f.relative_to(REPO)), text)
    record("security_secrets", {"files_scanned": scanned, "findings": len(hits)})
    assert not hits, "\n".join(hits)
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".env"], cwd=REPO, check=False
    ).returncode  # fmt: skip
    assert ignored == 0, ".env (the real secrets) must be git-ignored"


def test_compose_takes_every_password_from_the_environment() -> None:
    compose = (REPO / "docker-compose.yml").read_text()
    secrets = re.findall(r"(?im)^\s*([A-Z_]*(?:PASSWORD|SECRET|TOKEN)[A-Z_]*)\s*:\s*(.+)$", compose)
    assert secrets, "the Compose file has no password setting to check"
    for name, value in secrets:
        assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value.strip()), (name, value)
    example = (REPO / ".env.example").read_text()
    for line in example.splitlines():
        if re.match(r"^[A-Z_]*(PASSWORD|SECRET|TOKEN)[A-Z_]*=", line):
            assert line.split("=", 1)[1].startswith("change-me"), line


# --- SASL/SSL settings reach the clients ----------------------------------------------------

SASL = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "PLAIN",
    "sasl.username": "detector",
    "sasl.password": "from-the-environment",
    "ssl.ca.location": "/etc/ssl/certs/ca-certificates.crt",
}


class _Stop(Exception):
    pass


class _Recorder:
    """Stands in for a confluent-kafka client class: records each config, then stops."""

    def __init__(self) -> None:
        self.configs: list[dict] = []

    def __call__(self, config: dict, **_kw: object) -> object:
        self.configs.append(dict(config))

        def stop(*_a: object, **_k: object) -> None:
            raise _Stop

        return SimpleNamespace(
            init_transactions=stop, list_topics=stop, assign=stop, subscribe=stop,
            close=lambda: None, consume=stop,
        )  # fmt: skip


def _fake_model() -> SimpleNamespace:
    return SimpleNamespace(
        version="1", freq="min", prediction_length=4, context_length=16,
        calibration=Calibration(threshold=1.0), forecast=lambda ctx: None,
    )  # fmt: skip


def test_kafka_client_config_passes_through_to_every_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from confluent_kafka import TopicPartition

    from iot_mlops.data import collect, simulate, sinks
    from iot_mlops.detector import runner
    from iot_mlops.kafka import clients, topics

    monkeypatch.setenv("IOT_MLOPS_KAFKA_CLIENT_CONFIG", json.dumps(SASL))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker.example:9093")
    s = Settings()
    assert s.kafka_common() == {"bootstrap.servers": "broker.example:9093", **SASL}

    rec = _Recorder()
    # Every client is made by iot_mlops.kafka.clients.
    for name in ("Consumer", "Producer", "AdminClient"):
        monkeypatch.setattr(clients, name, rec)

    # The detector: its consumer and its transactional producer.
    det = runner.Detector(s, resolve=lambda _s: "1", load=lambda _s, _v: _fake_model())
    with pytest.raises(_Stop):
        det.run()
    det.stop()
    # The state rebuild's reader (a separate consumer).
    det.consumer = None  # no watermark probe: replay from the start
    with pytest.raises(_Stop):
        det._rebuild([TopicPartition(s.input_topic, 0, 100)])
    # The simulator's producer, the collector's consumer, the admin client.
    with pytest.raises(_Stop):
        sinks.KafkaSink(s, s.input_topic, simulate.SimulationReport("live", s.input_topic))
    collect._consumer(s)
    with pytest.raises(_Stop):
        topics.create_topics(s, {"t": 1})
    assert len(rec.configs) == 6, rec.configs
    for cfg in rec.configs:
        assert cfg["bootstrap.servers"] == "broker.example:9093"
        for k, v in SASL.items():
            assert cfg[k] == v, (k, cfg)


def test_librdkafka_build_supports_sasl_ssl() -> None:
    """The installed librdkafka accepts these settings at construction, i.e. it was built
    with SSL and SASL (a build without them refuses ``security.protocol=SASL_SSL``)."""
    from confluent_kafka import Producer

    cfg = {**SASL, "bootstrap.servers": "127.0.0.1:1"}
    if not Path(cfg["ssl.ca.location"]).exists():
        cfg.pop("ssl.ca.location")
    Producer(cfg).flush(0)
