"""Static checks of the deployment files: Prometheus config and alert rules, the Grafana
provisioning and dashboard, docker-compose.yml, the Dockerfiles and the trainer script.

Nothing here needs Docker or the running stack. The tests that run promtool or
check-jsonschema fail (never skip) when those are missing: `make setup` installs both.
"""

from __future__ import annotations

import json
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from iot_mlops.config import Settings
from iot_mlops.detector.metrics import DetectorMetrics

ROOT = Path(__file__).resolve().parents[1]
PROM_DIR = ROOT / "deploy/prometheus"
GRAFANA_DIR = ROOT / "deploy/grafana"
DASHBOARD = GRAFANA_DIR / "dashboards/iot-anomaly-detection.json"
IMPORTABLE = ROOT / "grafana.json"
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
TRAINER = ROOT / "deploy/trainer.sh"

ALLOWED_PANEL_TYPES = {"timeseries", "stat", "table", "gauge", "bargauge", "text", "heatmap"}
ONE_SHOTS = {"secrets-init", "provision", "trainer"}
# Project-image services that are Kafka/MLflow clients, with the principal each runs as
# (Kafka user, MLflow user): least privilege, as docs/security.md lists.
CLIENT_PRINCIPALS = {
    "provision": ("admin", "admin"),
    "trainer": ("reader", "trainer"),
    "continuous-trainer": ("reader", "trainer"),
    "anomaly-detector": ("detector", "detector"),
    "simulator": ("device", None),
}
PROJECT_IMAGE_SERVICES = {*CLIENT_PRINCIPALS, "secrets-init"}


# --- helpers -----------------------------------------------------------------------------------
def _promtool() -> str:
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if found is None:
        pytest.fail("promtool is not installed; `make setup` installs it (Debian's prometheus)")
    return found


def _run(cmd: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _compose() -> dict[str, Any]:
    return _load_yaml(COMPOSE)


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _required_ref(value: str) -> str | None:
    """The variable of a required ``${VAR:?message}`` reference (None: not one)."""
    m = re.fullmatch(r"\$\{([A-Z0-9_]+):\?[^}]*\}", value)
    return m.group(1) if m else None


def _exported_labels() -> dict[str, set[str]]:
    """Every sample the detector exports, by name, with its label names: DetectorMetrics on a
    fresh registry, each labelled metric given one child so that its samples exist (a counter
    `x` is exposed as `x_total`, a histogram as `x_bucket`, `x_sum`, `x_count`)."""
    registry = CollectorRegistry()
    metrics = DetectorMetrics(registry)
    for metric in vars(metrics).values():
        names = getattr(metric, "_labelnames", ())
        if isinstance(metric, MetricWrapperBase) and names:
            metric.labels(**dict.fromkeys(names, "probe"))
    labels: dict[str, set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def _exposed_samples() -> set[str]:
    """Every sample name the detector's registry exposes."""
    return set(_exported_labels())


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_IOT_NAME = re.compile(r"\biot_[a-z_]+\b")
_SELECTOR = re.compile(r"\b(iot_[a-z_]+)\{([^}]*)\}")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_LABEL_VALUES = re.compile(r"label_values\((iot_[a-z_]+)(?:\{[^}]*\})?,\s*(\w+)\)")
# Added by Prometheus to every scraped sample, not by the detector.
_TARGET_LABELS = {"job", "instance"}


def _metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label values in quotes are not names)."""
    return set(_IOT_NAME.findall(_STRING.sub('""', expr)))


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _dashboard_exprs(d: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", []) if "expr" in t]
    for v in d["templating"]["list"]:
        q = v.get("query")
        exprs.append(q["query"] if isinstance(q, dict) else str(q or ""))
    return exprs


def _alert_rules() -> list[dict[str, Any]]:
    return [r for g in _load_yaml(PROM_DIR / "alerts.yml")["groups"] for r in g["rules"]]


def _datasource_uid() -> str:
    ds = _load_yaml(GRAFANA_DIR / "provisioning/datasources/prometheus.yaml")["datasources"]
    (prom,) = [d for d in ds if d["type"] == "prometheus"]
    return prom["uid"]


# --- Prometheus --------------------------------------------------------------------------------
def test_promtool_check_config_and_rules() -> None:
    promtool = _promtool()
    # cwd = the config's folder: it names alerts.yml relative to itself, as in the container.
    config = _run([promtool, "check", "config", "prometheus.yml"], cwd=PROM_DIR)
    assert config.returncode == 0, config.stdout + config.stderr
    rules = _run([promtool, "check", "rules", "deploy/prometheus/alerts.yml"])
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_promtool_rule_unit_tests_fire_alerts() -> None:
    """alerts_test.yml feeds synthetic series: the alerts fire (detector down, no readings,
    dead letters, lag, anomaly rate, model, registry) and stay quiet on a healthy detector."""
    promtool = _promtool()
    tests = _load_yaml(PROM_DIR / "alerts_test.yml")["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert {"AnomalyDetectorDown", "DeadLettersRising"} <= fired
    assert len(fired) >= 5, fired
    result = _run([promtool, "test", "rules", "alerts_test.yml"], cwd=PROM_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_embedded_stack_prometheus_config_loads_the_same_rules(tmp_path: Path) -> None:
    """`iot-mlops stack up` writes its own prometheus.yml with alerts.yml as its rule file."""
    from iot_mlops.kafka.stack import Prometheus

    svc = Prometheus(Settings(state_dir=tmp_path))
    svc.dir.mkdir(parents=True)
    svc.prepare()
    config = svc.dir / "prometheus.yml"
    assert str(PROM_DIR / "alerts.yml") in config.read_text()
    result = _run([_promtool(), "check", "config", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.unit
def test_compose_prometheus_scrapes_every_detector_replica() -> None:
    cfg = _load_yaml(PROM_DIR / "prometheus.yml")
    assert cfg["rule_files"] == ["alerts.yml"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert "prometheus" in jobs
    (dns,) = jobs["anomaly-detector"]["dns_sd_configs"]
    assert dns["names"] == ["anomaly-detector"] and dns["type"] == "A"
    assert dns["port"] == Settings().metrics_port == 8000
    assert "anomaly-detector" in _services()


@pytest.mark.unit
def test_alert_rules_are_complete() -> None:
    rules = {r["alert"]: r for r in _alert_rules()}
    wanted = {
        "AnomalyDetectorDown": "up",
        "AnomalyDetectorNoReadings": "iot_readings_total",
        "ConsumerLagGrowing": "iot_consumer_lag",
        "AnomalyRateHigh": "iot_anomalies_total",
        "ModelNotLoaded": "iot_model_loaded",
        "DeadLettersRising": "iot_dead_letters_total",
        "RegistryUnreachable": "iot_registry_reachable",
    }
    for name, metric in wanted.items():
        assert name in rules, f"missing alert {name}"
        assert metric in rules[name]["expr"], name
    for name, r in rules.items():
        assert r.get("for"), f"{name} has no `for:`"
        assert r["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert r["annotations"].get("summary") and r["annotations"].get("description"), name
        assert 'job="anomaly-detector"' in r["expr"], f"{name} must select the detector job"
    assert "absent(" in rules["AnomalyDetectorDown"]["expr"]


@pytest.mark.unit
def test_input_drift_alert_is_the_projects_psi() -> None:
    """InputDriftHigh computes model/profile.py's PSI (the one the dashboard and the trainer's
    drift trigger use), at the bound the docs give."""
    from iot_mlops.model import profile

    rules = {r["alert"]: r for r in _alert_rules()}
    want = profile.psi_promql('job="anomaly-detector"', "1h", ("instance", "metric_name"))
    assert re.sub(r"\s", "", rules["InputDriftHigh"]["expr"]) == re.sub(r"\s", "", want) + ">0.25"


@pytest.mark.unit
def test_compose_continuous_trainer_runs_the_trainer_on_prometheus_drift() -> None:
    """The Compose trainer service is `iot-mlops trainer`, reads the drift from the
    Compose Prometheus, and its default bound is the InputDriftHigh alert's."""
    from typer.main import get_command

    from iot_mlops.cli.app import app

    services = _services()
    cmd = services["continuous-trainer"]["command"]
    assert cmd[0] == "trainer"
    args = dict(zip(cmd[1::2], cmd[2::2], strict=True))
    assert set(args) <= {p.opts[0] for p in get_command(app).commands["trainer"].params}
    assert args["--prometheus-url"] == "http://prometheus:9090"
    assert "9090" in str(services["prometheus"]["healthcheck"]["test"])
    psi = re.fullmatch(r"\$\{TRAINER_DRIFT_PSI:-([0-9.]+)\}", args["--drift-psi"])
    assert psi, args["--drift-psi"]
    rules = {r["alert"]: r for r in _alert_rules()}
    assert rules["InputDriftHigh"]["expr"].rstrip().endswith(f"> {psi.group(1)}")
    for var in ("TRAINER_EVERY_HOURS", "TRAINER_WINDOW_HOURS", "TRAINER_DRIFT_PSI"):
        assert f"{var}=" in ENV_EXAMPLE.read_text(), var


@pytest.mark.unit
def test_alert_and_dashboard_metrics_are_exported_by_the_detector() -> None:
    exported = _exposed_samples()
    used_alerts = set().union(*(_metric_names(r["expr"]) for r in _alert_rules()))
    used_dashboard = set().union(*(_metric_names(e) for e in _dashboard_exprs(_dashboard())))
    assert used_alerts and used_dashboard
    unknown = (used_alerts | used_dashboard) - exported
    assert not unknown, f"not exported by DetectorMetrics: {sorted(unknown)}"
    # And the dashboard covers what the issue asks for.
    for name in (
        "iot_readings_total",
        "iot_anomalies_total",
        "iot_series_actual_value",
        "iot_series_predicted_value",
        "iot_series_lower",
        "iot_series_upper",
        "iot_anomaly_score_bucket",
        "iot_detection_latency_seconds_bucket",
        "iot_consumer_lag",
        "iot_dead_letters_total",
        "iot_model_info",
        "iot_model_loaded",
        "iot_registry_reachable",
        "iot_live_true_positives_total",
        "iot_live_false_positives_total",
        "iot_forecast_batch_size_bucket",
        "iot_model_call_duration_seconds_bucket",
    ):
        assert name in used_dashboard, f"the dashboard does not show {name}"


@pytest.mark.unit
def test_dashboard_queries_name_only_exported_metrics_and_their_labels() -> None:
    """Each PromQL expression of the dashboard (panel queries and variable queries) names only
    samples the detector exports, and filters or lists only labels those samples carry (a
    filter on a label a metric lacks silently matches nothing once a value is chosen)."""
    exported = _exported_labels()
    assert {"iot_readings_total", "iot_anomaly_score_bucket", "iot_consumer_lag"} <= set(exported)
    exprs = _dashboard_exprs(_dashboard())
    assert len(exprs) >= 30, len(exprs)
    for expr in exprs:
        unknown = _metric_names(expr) - set(exported)
        assert not unknown, f"{expr}: not exported by the detector: {sorted(unknown)}"
        for metric, matchers in _SELECTOR.findall(_STRING.sub('""', expr)):
            used = set(_MATCHER.findall(matchers)) - _TARGET_LABELS
            assert used <= exported[metric], f"{expr}: {metric} has no {used - exported[metric]}"
        for metric, label in _LABEL_VALUES.findall(expr):
            assert label in exported[metric], f"{expr}: {metric} has no label {label}"


GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__range": "1h",
    "$device_type": ".*",
    "$device_id": "pump-000",
    "$metric_name": "temperature",
}


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every dashboard query, its Grafana variables filled in, parses as PromQL (promtool
    checks them as recording rules)."""
    exprs = [e for e in _dashboard_exprs(_dashboard()) if not e.startswith("label_values(")]
    rules = []
    for i, expr in enumerate(exprs):
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run([_promtool(), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.unit
def test_metric_name_extraction_ignores_label_values() -> None:
    expr = 'max by (topic) (iot_consumer_lag{topic="iot_sensor_data"}) + iot_series_tracked'
    assert _metric_names(expr) == {"iot_consumer_lag", "iot_series_tracked"}


# --- Grafana -----------------------------------------------------------------------------------
@pytest.mark.unit
def test_grafana_provisioning() -> None:
    ds = _load_yaml(GRAFANA_DIR / "provisioning/datasources/prometheus.yaml")["datasources"][0]
    assert ds["uid"] == "prometheus-iot"
    assert ds["url"] == "http://prometheus:9090"
    provider = _load_yaml(GRAFANA_DIR / "provisioning/dashboards/dashboards.yaml")["providers"][0]
    path = provider["options"]["path"]
    grafana = _services()["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if ":" in v}
    assert mounts.get(path) == "./deploy/grafana/dashboards", (path, mounts)
    assert mounts.get("/etc/grafana/provisioning") == "./deploy/grafana/provisioning"


@pytest.mark.unit
def test_dashboard_panels_are_valid_and_bound_to_the_provisioned_datasource() -> None:
    d = _dashboard()
    uid = _datasource_uid()
    assert 36 <= d["schemaVersion"] <= 41
    assert d["uid"] and d["title"]
    assert d["panels"], "no panels"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: set[tuple[int, int]] = set()
    rows = 0
    for p in d["panels"]:
        g = p["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] == "row":
            # An open row heading: a collapsed row would hide its panels from these checks.
            assert (g["x"], g["w"], g["h"]) == (0, 24, 1), p["title"]
            assert not p["collapsed"] and not p.get("panels") and "targets" not in p, p["title"]
            rows += 1
            continue
        assert p["type"] in ALLOWED_PANEL_TYPES, f"invalid panel type {p['type']!r}"
        assert p["datasource"] == {"type": "prometheus", "uid": uid}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == uid and t["expr"].strip(), p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
    assert rows and d["panels"][0]["type"] == "row", "the panels are grouped under rows"
    assert len(d["panels"]) - rows >= 22, "panels lost (the dashboard had 22)"
    for v in d["templating"]["list"]:
        assert v["datasource"]["uid"] == uid, v["name"]


@pytest.mark.unit
def test_dashboard_series_panel_uses_variables_and_an_interval_band() -> None:
    d = _dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert {"device_id", "metric_name"} <= set(variables)
    for name in ("device_id", "metric_name"):
        # The SDK writes the query as a plain string (no separate "definition" field).
        assert "label_values(iot_series_actual_value" in variables[name]["query"]
        assert name in variables[name]["query"]
    (panel,) = [p for p in d["panels"] if p["title"].startswith("Actual vs predicted")]
    exprs = " ".join(t["expr"] for t in panel["targets"])
    assert '"$device_id"' in exprs and '"$metric_name"' in exprs
    legends = {t["legendFormat"] for t in panel["targets"]}
    assert {"actual", "predicted", "lower", "upper"} <= legends
    fills = [
        (o["matcher"]["options"], prop["value"])
        for o in panel["fieldConfig"]["overrides"]
        for prop in o["properties"]
        if prop["id"] == "custom.fillBelowTo"
    ]
    assert fills == [("upper", "lower")]


@pytest.mark.unit
def test_importable_grafana_json_agrees_with_the_provisioned_dashboard() -> None:
    provisioned = _dashboard()
    importable = json.loads(IMPORTABLE.read_text())
    assert [i["name"] for i in importable["__inputs"]] == ["DS_PROMETHEUS"]
    rebound = json.loads(IMPORTABLE.read_text().replace("${DS_PROMETHEUS}", _datasource_uid()))
    for key in ("uid", "title", "panels", "templating", "schemaVersion"):
        assert rebound[key] == provisioned[key], key
    kinds = {p["type"] for p in provisioned["panels"]} - {"row"}
    assert {r["id"] for r in importable["__requires"] if r["type"] == "panel"} == kinds


@pytest.mark.unit
def test_dashboard_json_is_what_the_generator_writes() -> None:
    gen = runpy.run_path(str(GRAFANA_DIR / "build_dashboard.py"))
    assert DASHBOARD.read_text() == gen["render"](gen["dashboard"]()), (
        "stale dashboard: run .venv/bin/python deploy/grafana/build_dashboard.py"
    )
    assert IMPORTABLE.read_text() == gen["render"](gen["importable"]()), (
        "stale grafana.json: run .venv/bin/python deploy/grafana/build_dashboard.py"
    )


# --- docker-compose.yml ------------------------------------------------------------------------
def test_compose_file_matches_the_compose_spec() -> None:
    exe = Path(sys.executable).parent / "check-jsonschema"
    if not exe.exists():
        pytest.fail("check-jsonschema is missing from the venv; `make setup` installs it")
    result = _run(
        [str(exe), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.unit
def test_compose_services_and_images() -> None:
    services = _services()
    wanted = {
        "secrets-init", "kafka", "provision", "postgres", "mlflow", "trainer",
        "anomaly-detector", "simulator", "prometheus", "grafana",
    }  # fmt: skip
    assert wanted <= set(services)
    for name, svc in services.items():
        assert svc.get("build") or svc.get("image"), name
    assert services["kafka"]["image"].startswith("apache/kafka:4.1.")
    for name in PROJECT_IMAGE_SERVICES:
        assert services[name]["build"]["dockerfile"] == "Dockerfile", name
        assert services[name]["image"] == services["trainer"]["image"], name
    assert services["anomaly-detector"]["command"] == ["detect"]


@pytest.mark.unit
def test_compose_project_env_vars_are_settings_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    accepted = set()
    for name, field in Settings.model_fields.items():
        accepted.add(f"IOT_MLOPS_{name.upper()}")
        choices = getattr(field.validation_alias, "choices", None) or []
        accepted.update(str(c).upper() for c in choices)
    project = ("IOT_MLOPS_", "KAFKA_BOOTSTRAP_SERVERS", "MLFLOW_TRACKING_")
    seen = 0
    for name, svc in _services().items():
        env = {k: v for k, v in _env(svc).items() if k.startswith(project)}
        for var in env:
            assert var in accepted, f"{name}: {var} is not a field of Settings"
        if name in CLIENT_PRINCIPALS:
            assert env.get("KAFKA_BOOTSTRAP_SERVERS") == "kafka:29092", name
            assert env.get("MLFLOW_TRACKING_URI") == "https://mlflow:5000", name
            # The values parse into a Settings object, authenticated over TLS.
            with monkeypatch.context() as m:
                for var, value in env.items():
                    m.setenv(var, "probe" if value.startswith("${") else value)
                s = Settings()
                assert s.kafka_bootstrap_servers == "kafka:29092"
                conf = s.kafka_common()
                assert conf["security.protocol"] == "SASL_SSL", name
                assert conf["sasl.mechanism"] == "SCRAM-SHA-512", name
                assert conf["ssl.ca.location"] == "/ca/ca.pem", name
                assert s.mlflow_client_env()["MLFLOW_TRACKING_SERVER_CERT_PATH"] == "/ca/ca.pem"
            seen += 1
    assert seen == len(CLIENT_PRINCIPALS)
    detector = _env(_services()["anomaly-detector"])
    assert detector.get("IOT_MLOPS_METRICS_HOST") == "0.0.0.0", "the detector must listen on all"
    # Replicas named after their containers: a restarted one fences its open transaction.
    assert detector.get("IOT_MLOPS_INSTANCE_ID_FROM_HOSTNAME") == "true"
    # The simulator runs faster than real time: its event times run ahead of the record
    # times, which the detector's clock-skew bound would dead-letter after a minute or two.
    if "--rate" in _services()["simulator"]["command"]:
        assert detector.get("IOT_MLOPS_EVENT_TIME_MAX_AHEAD_S") == "0"


@pytest.mark.unit
def test_compose_ports_healthchecks_dependencies_and_volumes() -> None:
    compose = _compose()
    services = compose["services"]
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
        if name not in ONE_SHOTS:
            assert "healthcheck" in svc, f"{name} has no healthcheck"
        else:
            assert svc.get("restart") in ("no", None), name
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on must name a condition"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            want = "service_completed_successfully" if dep in ONE_SHOTS else "service_healthy"
            assert spec.get("condition") == want, f"{name} -> {dep}"
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"
            else:
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
    for name in ("kafka", "postgres", "mlflow", "prometheus", "grafana"):
        assert any(
            isinstance(v, str) and v.split(":")[0] in declared for v in services[name]["volumes"]
        ), f"{name} keeps no named volume"
    detector = services["anomaly-detector"]
    assert "container_name" not in detector and "ports" not in detector
    assert detector["restart"] == "unless-stopped"
    # Alive, not ready: a spare replica (no partitions) or one waiting for its model is healthy.
    assert "/livez" in " ".join(detector["healthcheck"]["test"])
    assert services["trainer"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert detector["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    mlflow_cmd = " ".join(services["mlflow"]["command"])
    assert "--allowed-hosts=mlflow," in mlflow_cmd and "--serve-artifacts" in mlflow_cmd
    assert "--backend-store-uri=postgresql://" in mlflow_cmd


@pytest.mark.unit
def test_compose_secrets_come_from_env_file() -> None:
    text = COMPOSE.read_text()
    for name, svc in _services().items():
        for var, value in _env(svc).items():
            if "PASSWORD" in var or "SECRET" in var:
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", value), (
                    f"{name}: {var} must be a required ${{VAR:?...}} reference, not a value"
                )
    assert "postgresql://mlflow@" in text, "no password inside the store URI"
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = {
        line.split("=", 1)[0].strip()
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    assert used <= example, f".env.example lacks {sorted(used - example)}"
    assert {"POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= used
    for line in ENV_EXAMPLE.read_text().splitlines():
        if "PASSWORD=" in line and not line.startswith("#"):
            assert "change-me" in line, "placeholders only in .env.example"


# --- security in Compose (docs/security.md) ---------------------------------------------------
@pytest.mark.unit
def test_compose_clients_run_as_their_own_principals() -> None:
    services = _services()
    for name, (kafka_user, mlflow_user) in CLIENT_PRINCIPALS.items():
        env = _env(services[name])
        assert env["IOT_MLOPS_KAFKA_SASL_USERNAME"] == kafka_user, name
        var = f"KAFKA_{kafka_user.upper()}_PASSWORD"
        assert _required_ref(env["IOT_MLOPS_KAFKA_SASL_PASSWORD"]) == var, name
        assert env.get("MLFLOW_TRACKING_USERNAME") == mlflow_user, name
        if mlflow_user:
            var = f"MLFLOW_{mlflow_user.upper()}_PASSWORD"
            assert _required_ref(env["MLFLOW_TRACKING_PASSWORD"]) == var, name
        # Clients get the CA certificate and nothing else of the PKI.
        assert [
            v
            for v in services[name]["volumes"]
            if str(v).startswith(("pki", "kafka-conf", "mlflow-tls"))
        ] == [], name
        assert "ca:/ca:ro" in services[name]["volumes"], name
    # The backfill alone writes readings, as the device principal.
    trainer = _env(services["trainer"])
    assert trainer["TRAINER_BACKFILL_KAFKA_USERNAME"] == "device"
    assert "TRAINER_BACKFILL_KAFKA_USERNAME" in TRAINER.read_text()
    # provision sets every pipeline principal's password from .env.
    provision = _env(services["provision"])
    for user in ("detector", "device", "reader"):
        assert f"KAFKA_{user.upper()}_PASSWORD" in provision
    for user in ("trainer", "detector"):
        assert f"MLFLOW_{user.upper()}_PASSWORD" in provision


@pytest.mark.unit
def test_compose_kafka_listens_only_with_tls_and_sasl(tmp_path: Path) -> None:
    """The broker's configuration is what `iot-mlops deploy secrets` writes: checked here as
    written, and run for real in tests/security/test_compose_secrets.py."""
    from iot_mlops.security.deploy import DeployDirs, write_secrets

    services = _services()
    kafka = services["kafka"]
    assert "KAFKA_LISTENERS" not in _env(kafka), "configured by secrets-init, not the image"
    script = kafka["command"][0]
    assert '--add-scram "$$(cat /kafka-conf/admin-scram)"' in script
    assert 'kafka-server-start.sh "$$conf"' in script
    assert "kafka-conf:/kafka-conf:ro" in kafka["volumes"]
    assert "--command-config /kafka-conf/client.properties" in kafka["healthcheck"]["test"][1]
    assert kafka["depends_on"]["secrets-init"]["condition"] == "service_completed_successfully"
    assert services["secrets-init"]["command"][:2] == ["deploy", "secrets"]
    dirs = DeployDirs(*(tmp_path / d for d in ("pki", "ca", "kafka", "mlflow")))
    env = {"KAFKA_ADMIN_PASSWORD": "probe-admin", "KAFKA_CONTROLLER_PASSWORD": "probe-ctl"}
    write_secrets(dirs, env, Settings(), 1000, 10001)
    props = dict(
        line.split("=", 1) for line in (dirs.kafka / "server.properties").read_text().splitlines()
    )
    protocols = dict(kv.split(":") for kv in props["listener.security.protocol.map"].split(","))
    assert protocols == {"CONTROLLER": "SASL_PLAINTEXT", "INTERNAL": "SASL_SSL", "HOST": "SASL_SSL"}
    assert props["advertised.listeners"] == "INTERNAL://kafka:29092,HOST://localhost:9092"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin"
    # The published port is the HOST listener, on this machine only.
    assert kafka["ports"] == ["127.0.0.1:9092:9092"]


@pytest.mark.unit
def test_compose_mlflow_requires_auth_over_tls() -> None:
    mlflow = _services()["mlflow"]
    cmd = mlflow["command"]
    assert "--app-name=basic-auth" in cmd
    tls = [c for c in cmd if c.startswith("--uvicorn-opts=")]
    assert (
        tls and "--ssl-keyfile=/mlflow-tls/" in tls[0] and "--ssl-certfile=/mlflow-tls/" in tls[0]
    )
    env = _env(mlflow)
    ini_mount = [v for v in mlflow["volumes"] if v.endswith(":/etc/mlflow/basic_auth.ini:ro")]
    assert ini_mount and env["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow/basic_auth.ini"
    import configparser

    ini = configparser.ConfigParser()
    ini.read(ROOT / ini_mount[0].split(":")[0])
    assert ini["mlflow"]["default_permission"] == "READ"  # the detector may not write
    assert "admin_password" not in ini["mlflow"], "the admin password comes from .env"
    assert ini["mlflow"]["database_uri"].startswith("postgresql://mlflow@postgres")
    assert _required_ref(env["MLFLOW_AUTH_ADMIN_PASSWORD"]) == "MLFLOW_ADMIN_PASSWORD"
    health = " ".join(mlflow["healthcheck"]["test"])
    assert "https://localhost:5000/health" in health and "cafile='/mlflow-tls/ca.pem'" in health


# --- images and the trainer --------------------------------------------------------------------
@pytest.mark.unit
def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    installs = re.findall(r"pip install (\S+)", text)
    assert installs.count(".") == 1, installs
    assert "[dev]" not in text and "-e ." not in text
    assert re.search(r"^USER (?!root\b|0\b)\S+", text, re.M), "must run as a non-root user"
    assert 'ENTRYPOINT ["iot-mlops"]' in text
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for copied in re.findall(r"^COPY (?!--)(.+) \S+$", text, re.M):
        for src in copied.split():
            assert f"!{src.rstrip('/')}" in {i.rstrip("/") for i in ignore}, src
    mlflow = (ROOT / "deploy/mlflow/Dockerfile").read_text()
    assert "mlflow==3.17.2" in mlflow and "psycopg2-binary" in mlflow
    assert re.search(r"^USER (?!root\b)\S+", mlflow, re.M)


@pytest.mark.unit
def test_trainer_script() -> None:
    result = _run(["sh", "-n", str(TRAINER)])
    assert result.returncode == 0, result.stderr
    text = TRAINER.read_text()
    for cmd in ("iot-mlops simulate --hours", "iot-mlops collect --out", "iot-mlops models"):
        assert cmd in text, cmd
    assert re.search(r"iot-mlops train --data \S+ --promote", text)
    assert "get_model_version_by_alias" in text
    assert (ROOT / "Dockerfile").read_text().count("deploy/trainer.sh") == 1


@pytest.mark.unit
def test_cli_commands_used_by_compose_and_trainer_exist() -> None:
    """The commands and flags the containers run are the CLI's (DESIGN.md contract)."""
    import typer.main

    from iot_mlops.cli import app

    root = typer.main.get_command(app)
    commands = root.commands  # type: ignore[attr-defined]
    wanted = {
        "detect": set(),
        "simulate": {"--hours", "--rate"},
        "collect": {"--out"},
        "train": {"--data", "--promote"},
        "models": set(),
        "deploy": set(),
    }
    deploy = commands["deploy"].commands  # type: ignore[attr-defined]
    assert {"secrets", "provision"} <= set(deploy), "`iot-mlops deploy` lacks a Compose step"
    step_opts = {o for p in deploy["secrets"].params for o in getattr(p, "opts", [])}
    assert {"--kafka-uid", "--mlflow-uid"} <= step_opts
    for name, flags in wanted.items():
        assert name in commands, f"`iot-mlops {name}` does not exist"
        opts = {o for p in commands[name].params for o in getattr(p, "opts", [])}
        assert flags <= opts, f"`iot-mlops {name}` lacks {sorted(flags - opts)}"
