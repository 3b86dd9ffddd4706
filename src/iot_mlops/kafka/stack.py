"""The embedded local stack: real Kafka (KRaft), MLflow and Prometheus as background processes.

Everything lives under ``settings.state_dir``: configs, data, logs and pid files, so data
survives ``down``/``up`` and ``down`` stops exactly what ``up`` started, children included,
even after a parent was killed (see ``procs``); ``up`` and ``down`` hold a lock on the dir.
The test fixtures use this same code on free ports in a temporary directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from iot_mlops.config import Settings
from iot_mlops.errors import ServiceError
from iot_mlops.kafka import broker
from iot_mlops.kafka.procs import OWNER_ENV, owned_processes, stack_lock, terminate
from iot_mlops.security.certs import write_file
from iot_mlops.security.credentials import StackSecrets

KAFKA_LOG4J = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache
logger.apache.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


# The health probe's librdkafka log goes here and nowhere else.
_QUIET = logging.getLogger("iot_mlops.kafka.probe")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    port: int
    url: str
    running: bool
    healthy: bool
    log: Path


class Service:
    """One background process with a pid file, a log file and a health probe."""

    name: str = ""

    def __init__(self, settings: Settings, secrets: StackSecrets | None = None) -> None:
        self.s = settings
        # Set on a secure stack (`stack up --secure`): TLS and authentication on.
        self.secrets = secrets
        self.root = settings.state_dir.resolve()
        self.dir = self.root / self.name
        self.log = self.root / "logs" / f"{self.name}.log"
        self.pidfile = self.root / "run" / f"{self.name}.pid"

    # --- to override -------------------------------------------------------------------------
    port_setting: str = ""  # the Settings field holding the service's port
    scheme: str = "http://"  # of ``url`` ("" for Kafka's host:port)

    @property
    def port(self) -> int:
        return int(getattr(self.s, self.port_setting))

    @property
    def url(self) -> str:
        scheme = "https://" if self.secrets and self.scheme == "http://" else self.scheme
        return f"{scheme}{self.s.bind_host}:{self.port}"

    def available(self) -> str | None:
        """None when the service can run here, else why not (with the fix)."""
        return None

    def prepare(self) -> None:
        """Write configs, format storage; runs before every start."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def healthy(self) -> bool:
        raise NotImplementedError

    # --- process management ------------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid we started, if that exact process (same create time) is still alive."""
        try:
            info = json.loads(self.pidfile.read_text())
            proc = psutil.Process(info["pid"])
            if abs(proc.create_time() - info["create_time"]) > 1.0 or proc.status() == "zombie":
                return None
            return int(info["pid"])
        except (FileNotFoundError, ValueError, KeyError, psutil.Error):
            return None

    def start(self) -> None:
        if self.pid() is not None:
            return
        _ensure_port_free(self.name, self.s.bind_host, self.port, self.log)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with open(self.log, "ab") as log:
            # A new session: the service is not killed by the terminal's Ctrl-C, and `down`
            # can signal its whole process group (MLflow runs worker children).
            proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.dir,
                start_new_session=True,
                env={**self.env(), OWNER_ENV: str(self.dir)},
            )
        create_time = psutil.Process(proc.pid).create_time()
        self.pidfile.write_text(json.dumps({"pid": proc.pid, "create_time": create_time}))

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise ServiceError(
                    f"{self.name} exited during start-up; its log is {self.log}:\n"
                    + _tail(self.log),
                    fix=f"read {self.log}, then `iot-mlops stack up` again",
                )
            if self.healthy():
                return
            time.sleep(0.5)
        raise ServiceError(
            f"{self.name} did not become healthy within {timeout:.0f}s (log: {self.log}):\n"
            + _tail(self.log),
            fix=f"read {self.log}; raise IOT_MLOPS_STARTUP_TIMEOUT_S if the machine is slow",
        )

    def stop(self, timeout: float = 30.0) -> list[int]:
        """Stop every process of this service, also those a killed parent left behind (found
        by their environment marker): SIGTERM, wait, SIGKILL. Returns the pids stopped."""
        procs = owned_processes(str(self.dir))
        try:
            group: int | None = int(json.loads(self.pidfile.read_text())["pid"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            group = None
        # The recorded leader's group, only while one of ours is still in it (pids are reused).
        if group is not None and not any(_pgid(p) == group for p in procs):
            group = None
        stopped = terminate(procs, group, timeout) if procs else []
        self.pidfile.unlink(missing_ok=True)
        return stopped

    def status(self) -> ServiceStatus:
        pid = self.pid()
        return ServiceStatus(
            self.name, pid, self.port, self.url, pid is not None,
            pid is not None and self.healthy(), self.log,
        )  # fmt: skip


class Kafka(Service):
    name, port_setting, scheme = "kafka", "kafka_port", ""

    @property
    def libs(self) -> Path:
        return self.s.kafka_libs_dir.resolve()

    def available(self) -> str | None:
        if shutil.which("java") is None:
            return "Java 17+ is not installed; fix: apt-get install openjdk-17-jre-headless"
        if not list(self.libs.glob("kafka_2.13-*.jar")):
            return f"the Kafka jars are missing in {self.libs}; fix: make setup"
        return None

    def _java(self, *args: str) -> list[str]:
        return ["java", "-cp", f"{self.libs}/*", *args]

    def server_properties(self) -> dict[str, str]:
        """The broker's ``server.properties``: one KRaft node, broker and controller."""
        s = self.s
        host = s.bind_host
        return {
            **broker.single_node(str(self.dir / "data"), max(s.max_message_bytes * 64, 1_048_588)),
            "controller.quorum.bootstrap.servers": f"{host}:{s.kafka_controller_port}",
            "listeners": f"PLAINTEXT://{host}:{s.kafka_port},"
            f"CONTROLLER://{host}:{s.kafka_controller_port}",
            "advertised.listeners": f"PLAINTEXT://{host}:{s.kafka_port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        }

    def secure_properties(self, sec: StackSecrets) -> dict[str, str]:
        """SASL_SSL for clients and the broker itself on one listener (kafka/broker.py)."""
        s, host = self.s, self.s.bind_host
        return {
            "listeners": f"SASL_SSL://{host}:{s.kafka_port},CONTROLLER://{host}:{s.kafka_controller_port}",
            "advertised.listeners": f"SASL_SSL://{host}:{s.kafka_port}",
            **broker.sasl_ssl(
                ["SASL_SSL"], sec.creds.kafka["admin"], sec.creds.controller,
                sec.certs.keystore, sec.certs.ca,
            ),
        }  # fmt: skip

    def write_config(self) -> Path:
        """``server.properties`` and the log4j2 configuration; returns the former."""
        props = self.dir / "server.properties"
        conf = self.server_properties()
        if self.secrets is not None:
            conf.update(self.secure_properties(self.secrets))
        write_file(props, broker.render(conf), private=True)  # passwords inside
        (self.dir / "log4j2.properties").write_text(KAFKA_LOG4J.format(log=self.log))
        return props

    def prepare(self) -> None:
        data = self.dir / "data"
        props = self.write_config()
        if not (data / "meta.properties").exists():
            cluster_id = subprocess.run(
                self._java("kafka.tools.StorageTool", "random-uuid"),
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            fmt = subprocess.run(
                self._java(
                    f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
                    "kafka.tools.StorageTool", "format", "--standalone",
                    "-t", cluster_id, "-c", str(props), *self._scram_users(),
                ),
                capture_output=True, text=True,
            )  # fmt: skip
            if fmt.returncode != 0:
                raise ServiceError(
                    f"formatting Kafka storage in {data} failed:\n{fmt.stdout}{fmt.stderr}",
                    fix=f"remove {data} and run `iot-mlops stack up` again",
                )

    def _scram_users(self) -> list[str]:
        """StorageTool arguments creating the SCRAM users with the metadata (secure stack)."""
        if self.secrets is None:
            return []
        return [
            arg
            for user, pw in self.secrets.creds.kafka.items()
            for arg in ("--add-scram", broker.scram_user_arg(user, pw))
        ]

    def command(self) -> list[str]:
        return [
            "java",
            *self.s.kafka_heap.split(),
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.log.parent}",
            "-cp",
            f"{self.libs}/*",
            "kafka.Kafka",
            str(self.dir / "server.properties"),
        ]

    def healthy(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            # Quiet: while the broker starts, librdkafka would print "Connect to ... failed:
            # Connection refused" on stderr for every retry of this probe.
            admin = AdminClient(
                {
                    **self.s.kafka_common(),
                    "socket.timeout.ms": 2000,
                    "log_level": 0,
                    "logger": _QUIET,
                }
            )
            md = admin.list_topics(timeout=2)
            return bool(md.brokers)
        except Exception:
            return False


class MLflow(Service):
    name, port_setting = "mlflow", "mlflow_port"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "mlflow", "server",
            "--host", self.s.bind_host,
            "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.dir / 'mlflow.db'}",
            "--artifacts-destination", str(self.dir / "artifacts"),
            "--serve-artifacts",
            "--workers", "1",
            "--allowed-hosts", ",".join(self.allowed_hosts()),
            *self._secure_args(),
        ]  # fmt: skip

    def _secure_args(self) -> list[str]:
        """Basic auth (MLflow's app, users in its own SQLite) and TLS (uvicorn) when secure."""
        if self.secrets is None:
            return []
        c = self.secrets.certs
        tls = f"--ssl-keyfile={c.key} --ssl-certfile={c.cert}"
        return ["--app-name", "basic-auth", "--uvicorn-opts", tls]

    def prepare(self) -> None:
        if self.secrets is None:
            return
        ini = "\n".join([
            "[mlflow]",
            # Authenticated users may read what no permission names: the detector reads the
            # model; only its creator (the trainer) and admin may change it or move an alias.
            "default_permission = READ",
            f"database_uri = sqlite:///{self.dir / 'basic_auth.db'}",
            "admin_username = admin",
            "admin_password = " + self.secrets.creds.mlflow["admin"],
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
            "",
        ])  # fmt: skip
        write_file(self._auth_ini, ini, private=True)

    @property
    def _auth_ini(self) -> Path:
        return self.dir / "basic_auth.ini"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.secrets is not None:
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(self._auth_ini)
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = self.secrets.creds.mlflow_secret_key
        return env

    def allowed_hosts(self) -> list[str]:
        """Host headers MLflow accepts (against DNS rebinding): the configured list, else the
        bind address and, on loopback, localhost, each with and without the port."""
        if self.s.mlflow_allowed_hosts:
            return [h.strip() for h in self.s.mlflow_allowed_hosts.split(",") if h.strip()]
        names = [self.s.bind_host]
        if self.s.bind_host.startswith("127.") or self.s.bind_host == "localhost":
            names += ["localhost", "127.0.0.1"]
        names = list(dict.fromkeys(names))
        return [*names, *(f"{n}:{self.port}" for n in names)]

    def healthy(self) -> bool:
        return http_ok(f"{self.url}/health", self._verify())

    def _verify(self) -> str | bool:
        return str(self.secrets.certs.ca) if self.secrets else True


class Prometheus(Service):
    name, port_setting = "prometheus", "prometheus_port"

    def available(self) -> str | None:
        if shutil.which("prometheus") is None:
            return "Prometheus is not installed (optional); fix: apt-get install prometheus"
        return None

    def prepare(self) -> None:
        rules = _repo_file("deploy/prometheus/alerts.yml")
        lines = [
            "global:",
            "  scrape_interval: 5s",
            "  evaluation_interval: 5s",
        ]
        if rules is not None:
            lines += ["rule_files:", f"  - {rules}"]
        lines += [
            "scrape_configs:",
            "  - job_name: prometheus",
            "    static_configs:",
            f"      - targets: ['{self.s.bind_host}:{self.port}']",
            "  - job_name: anomaly-detector",
            "    static_configs:",
            f"      - targets: ['{self.s.bind_host}:{self.s.metrics_port}']",
            "",
        ]
        (self.dir / "prometheus.yml").write_text("\n".join(lines))

    def command(self) -> list[str]:
        return [
            "prometheus",
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address={self.s.bind_host}:{self.port}",
            # No --web.enable-lifecycle: it opens an unauthenticated /-/quit and /-/reload.
            # The config is rewritten only before a start; a reload would be SIGHUP.
        ]

    def healthy(self) -> bool:
        return http_ok(f"{self.url}/-/ready")


class Stack:
    """The three services, started in order and stopped in reverse."""

    def __init__(
        self, settings: Settings, with_prometheus: bool = True, secure: bool = False
    ) -> None:
        # Secure when asked, or when this state dir was made secure once (its broker's data
        # and listeners expect it): never silently back to open.
        self.secrets: StackSecrets | None = None
        if secure or StackSecrets.exist(settings.state_dir):
            hosts = [settings.bind_host, "localhost", "127.0.0.1"]
            self.secrets = StackSecrets.ensure(settings.state_dir, hosts)
        self.user_settings = settings
        self.s = self.as_role("admin") if self.secrets else settings
        self.services: list[Service] = [Kafka(self.s, self.secrets), MLflow(self.s, self.secrets)]
        if with_prometheus:
            self.services.append(Prometheus(self.s))

    @property
    def mlflow_url(self) -> str:
        return MLflow(self.user_settings, self.secrets).url

    def as_role(self, role: str) -> Settings:
        """The user's settings, authenticated as ``role`` on this (secure) stack."""
        if self.secrets is None:
            return self.user_settings
        return self.secrets.settings_for(self.user_settings, role, self.mlflow_url)

    def role_env(self, role: str) -> dict[str, str]:
        """The environment variables that make an iot-mlops command run as ``role`` (empty
        on an open stack: every command works as it is)."""
        from iot_mlops.security.credentials import ENV_NAMES

        if self.secrets is None:
            return {}
        rs = self.as_role(role)
        out = {}
        for field, env in ENV_NAMES.items():
            value = getattr(rs, field)
            value = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            if value:
                out[env] = str(value)
        return out

    def up(self, on_event: Callable[[str], None] = lambda _m: None) -> list[ServiceStatus]:
        with stack_lock(self.s.state_dir.resolve(), "up"):
            for svc in self.services:
                why = svc.available()
                if why is not None:
                    if isinstance(svc, Prometheus):
                        on_event(f"skipping prometheus: {why}")
                        continue
                    raise ServiceError(f"cannot start {svc.name}: {why}")
                self._start(svc, on_event)
            from iot_mlops.kafka.topics import ensure_topics

            created = ensure_topics(self.s)
            if self.secrets is not None:
                self._secure_principals(on_event)
        if created:
            on_event(f"created topics: {', '.join(created)}")
        return self.status()

    def _secure_principals(self, on_event: Callable[[str], None]) -> None:
        """The ACLs of each Kafka principal and MLflow's users (idempotent)."""
        from iot_mlops.security import acls
        from iot_mlops.security.mlflow_users import ensure_users

        n = acls.apply(self.s, acls.grants(self.s))
        made = ensure_users(self.s, self.secrets.creds.mlflow)
        on_event(
            f"secure: {n} Kafka ACL bindings; MLflow users "
            + (", ".join(made) + " created" if made else "present")
            + "; `iot-mlops stack env ROLE` prints a role's settings"
        )

    def _start(self, svc: Service, on_event: Callable[[str], None]) -> None:
        already = svc.pid() is not None
        if not already:
            # Children of a killed earlier run still hold the port: stop them first.
            left = svc.stop()
            if left:
                on_event(f"{svc.name}: stopped {len(left)} leftover process(es) of a previous run")
        on_event(f"{svc.name}: {'already running' if already else 'starting'}")
        try:
            svc.start()
            svc.wait_healthy(self.s.startup_timeout_s)
        except ServiceError:
            svc.stop()
            raise
        on_event(f"{svc.name}: healthy at {svc.url}")

    def down(self) -> list[str]:
        if not self.s.state_dir.exists():
            return []  # never started here: nothing to stop, and no dir to create
        with stack_lock(self.s.state_dir.resolve(), "down"):
            return [svc.name for svc in reversed(self.services) if svc.stop()]

    def status(self) -> list[ServiceStatus]:
        return [svc.status() for svc in self.services]


def _ensure_port_free(name: str, host: str, port: int, log: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise ServiceError(
                f"cannot start {name}: port {host}:{port} is already in use by another process",
                fix=f"stop that process (`ss -ltnp 'sport = :{port}'` shows it) or choose "
                f"another port with IOT_MLOPS_{name.upper()}_PORT; {name}'s log is {log}",
            ) from None


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except ProcessLookupError:
        return None


def http_ok(url: str, verify: str | bool = True) -> bool:
    """Whether ``url`` answers 200 within 2 s (``verify``: the CA file of an https URL)."""
    try:
        return httpx.get(url, timeout=2.0, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def _repo_file(rel: str) -> Path | None:
    """A file of the source checkout (deploy/…), when running from one."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / rel
        if candidate.exists():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
