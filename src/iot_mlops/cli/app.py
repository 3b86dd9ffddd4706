"""The ``iot-mlops`` command line. Exit codes: 0 ok, 1 failure, 2 bad usage or input."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from iot_mlops.config import Settings
from iot_mlops.errors import ConfigError, IotMlopsError, ServiceError

console = Console(stderr=True)
out = Console()

app = typer.Typer(
    help="Real-time anomaly detection for IoT sensor streams (Kafka, AutoGluon, MLflow).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(
    help="The embedded local stack: Kafka, MLflow, Prometheus.", no_args_is_help=True
)
app.add_typer(stack_app, name="stack")
deploy_app = typer.Typer(
    help="The one-shot steps of the secure Compose deployment (docker-compose.yml, "
    "docs/security.md).",
    no_args_is_help=True,
)
app.add_typer(deploy_app, name="deploy")

F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn our errors (and Ctrl-C) into a message and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IotMlopsError as e:
            console.print(f"[bold red]error:[/] {e.message}", highlight=False)
            if e.fix:
                console.print(f"[yellow]fix:[/] {e.fix}", highlight=False)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def env_option(flag: str, env: str, help_text: str, **kwargs: Any) -> Any:
    """An option that overrides a setting; its help names the setting's environment variable."""
    return typer.Option(None, flag, help=f"{help_text} \\[env {env}]", **kwargs)


StateDir = env_option("--state-dir", "IOT_MLOPS_STATE_DIR", "State directory")


def settings_from(**overrides: Any) -> Settings:
    return Settings().with_overrides(**overrides)


@stack_app.command("up")
@friendly
def stack_up(
    state_dir: Path | None = StateDir,
    partitions: int | None = env_option(
        "--partitions", "IOT_MLOPS_INPUT_PARTITIONS", "Partitions of the topics", min=1
    ),
    prometheus: bool = typer.Option(True, help="Start Prometheus when it is installed."),
    secure: bool = typer.Option(
        False,
        help="TLS and authentication: Kafka SASL_SSL with ACLs per principal, MLflow "
        "basic auth over https (docs/security.md). A state dir made secure stays secure.",
    ),
) -> None:
    """Start Kafka, MLflow (and Prometheus), wait until healthy, create the topics."""
    from iot_mlops.kafka.stack import Stack

    s = settings_from(state_dir=state_dir, input_partitions=partitions)
    stack = Stack(s, with_prometheus=prometheus, secure=secure)
    with console.status("starting the stack…"):
        statuses = stack.up(on_event=lambda m: console.print(f"  {m}"))
    _print_status(statuses)


@stack_app.command("env")
@friendly
def stack_env(
    role: str = typer.Argument(
        ..., help="admin, detector, device (simulate) or trainer (collect, train, promote)"
    ),
    state_dir: Path | None = StateDir,
) -> None:
    """Print the settings (shell exports) that run commands as ROLE on the secure stack:
    eval "$(iot-mlops stack env detector)"; iot-mlops detect"""
    import shlex

    from iot_mlops.kafka.stack import Stack
    from iot_mlops.security.credentials import ROLES, StackSecrets

    s = settings_from(state_dir=state_dir)
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}", fix=f"use one of {', '.join(ROLES)}")
    if not StackSecrets.exist(s.state_dir):
        raise ConfigError(
            f"the stack in {s.state_dir} is not secure (no credentials)",
            fix="`iot-mlops stack up --secure` makes them",
        )
    for env, value in Stack(s, with_prometheus=False).role_env(role).items():
        out.print(f"export {env}={shlex.quote(value)}", markup=False, highlight=False)


@stack_app.command("down")
@friendly
def stack_down(state_dir: Path | None = StateDir) -> None:
    """Stop the processes that `stack up` started (data is kept)."""
    from iot_mlops.kafka.stack import Stack

    stopped = Stack(settings_from(state_dir=state_dir)).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack_app.command("status")
@friendly
def stack_status(state_dir: Path | None = StateDir) -> None:
    """Show each service, its pid, port and health. Exit 1 when one is down."""
    from iot_mlops.kafka.stack import Stack

    statuses = Stack(settings_from(state_dir=state_dir)).status()
    _print_status(statuses)
    core = [st for st in statuses if st.name != "prometheus"]
    if not all(st.healthy for st in core):
        raise typer.Exit(1)


def _print_status(statuses: list[Any]) -> None:
    table = Table(title="iot-mlops stack")
    for col in ("service", "pid", "port", "health", "url", "log"):
        table.add_column(col)
    for st in statuses:
        health = (
            "[green]healthy[/]"
            if st.healthy
            else "[yellow]unhealthy[/]"
            if st.running
            else "[red]stopped[/]"
        )
        table.add_row(st.name, str(st.pid or "-"), str(st.port), health, st.url, str(st.log))
    out.print(table)


@deploy_app.command("secrets")
@friendly
def deploy_secrets(
    pki: Path = typer.Option(Path("/pki"), help="The CA and its key (made once, kept here)."),
    ca: Path = typer.Option(Path("/ca"), help="ca.pem for every client."),
    kafka: Path = typer.Option(Path("/kafka-conf"), help="The broker's config and keystore."),
    mlflow: Path = typer.Option(Path("/mlflow-tls"), help="MLflow's key and certificate."),
    kafka_uid: int = typer.Option(1000, help="The uid the Kafka image runs as (appuser)."),
    mlflow_uid: int = typer.Option(10001, help="The uid the MLflow image runs as."),
) -> None:
    """Make the CA and server certificate (once) and write each server's files, with the
    passwords of KAFKA_ADMIN_PASSWORD and KAFKA_CONTROLLER_PASSWORD."""
    import os

    from iot_mlops.security.deploy import DeployDirs, write_secrets

    dirs = DeployDirs(pki, ca, kafka, mlflow)
    for f in write_secrets(dirs, dict(os.environ), Settings(), kafka_uid, mlflow_uid):
        console.print(f"  wrote {f}", highlight=False)


@deploy_app.command("provision")
@friendly
def deploy_provision() -> None:
    """As admin: create the topics, set the Kafka SCRAM users (KAFKA_<USER>_PASSWORD) and
    their ACLs, create or update MLflow's users (MLFLOW_<USER>_PASSWORD)."""
    import os

    from iot_mlops.security.deploy import provision

    for line in provision(Settings(), dict(os.environ)):
        console.print(f"  {line}", highlight=False)


@app.command("detect")
@friendly
def detect(
    topic: str | None = env_option("--topic", "IOT_MLOPS_INPUT_TOPIC", "Input topic"),
    group: str | None = env_option("--group", "IOT_MLOPS_CONSUMER_GROUP", "Consumer group"),
    alias: str | None = env_option("--alias", "IOT_MLOPS_MODEL_ALIAS", "Registry alias"),
    model_name: str | None = typer.Option(None, "--model-name", help="Registered model name"),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="/metrics and /healthz port"
    ),
) -> None:
    """Score the input stream with the model behind the registry alias; publish anomaly
    episodes (IOT_MLOPS_EPISODE_* and IOT_MLOPS_CHANNELS tune them)."""
    import logging

    from rich.logging import RichHandler

    from iot_mlops.detector.main import run_detector

    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    # httpx logs every request at INFO: the registry's health probe every poll interval
    # would bury what the detector says about itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    s = settings_from(
        input_topic=topic, consumer_group=group, model_alias=alias, model_name=model_name,
        metrics_port=metrics_port,
    )  # fmt: skip
    raise typer.Exit(run_detector(s))


def _parse_time(value: str | None, flag: str) -> int | None:
    """ISO 8601 → UTC epoch ms; a time without an offset is taken as UTC."""
    if value is None:
        return None
    from datetime import UTC, datetime

    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{flag} {value!r} is not an ISO 8601 time", fix=f"e.g. {flag} 2026-11-26T04:00:00Z"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


class SimulateOptions:
    """The options of `simulate` (kept out of its signature so it reads as the steps)."""

    hours = typer.Option(
        None, "--hours", help="Backfill this many hours of history, as fast as possible."
    )
    rate = typer.Option(
        None,
        "--rate",
        help="Live mode: readings per second. Default: the fleet's real-time rate (one round "
        "of every series per interval). The simulated clock advances one interval per round, "
        "so a higher rate runs simulated time faster than the wall clock.",
    )
    duration = typer.Option(
        None, "--duration", help="Live mode: stop after this many seconds (default: Ctrl-C)."
    )
    devices = env_option("--devices", "IOT_MLOPS_SIM_DEVICES", "Devices in the fleet", min=1)
    seed = env_option("--seed", "IOT_MLOPS_SIM_SEED", "Fleet and signal seed")
    interval = env_option(
        "--interval", "IOT_MLOPS_SIM_INTERVAL_S", "Seconds between readings of a series", min=1
    )
    parquet = typer.Option(
        None, "--parquet", help="Backfill: write this parquet file instead of producing to Kafka."
    )
    topic = env_option("--topic", "IOT_MLOPS_INPUT_TOPIC", "Kafka topic")
    end = typer.Option(
        None, "--end", help="Backfill: end of the history, exclusive (ISO 8601; default now)."
    )
    start = typer.Option(
        None, "--start", help="Live: simulated time of the first reading (ISO 8601; default now)."
    )
    anomaly_rate = typer.Option(
        0.015,
        "--anomaly-rate",
        min=0.0,
        max=0.49,
        help="Expected share of labelled anomalous points.",
    )
    progress = typer.Option(True, help="Show a progress bar.")


@app.command("simulate")
@friendly
def simulate(
    hours: float | None = SimulateOptions.hours,
    rate: float | None = SimulateOptions.rate,
    duration: float | None = SimulateOptions.duration,
    devices: int | None = SimulateOptions.devices,
    seed: int | None = SimulateOptions.seed,
    interval: int | None = SimulateOptions.interval,
    parquet: Path | None = SimulateOptions.parquet,
    topic: str | None = SimulateOptions.topic,
    end: str | None = SimulateOptions.end,
    start: str | None = SimulateOptions.start,
    anomaly_rate: float = SimulateOptions.anomaly_rate,
    progress: bool = SimulateOptions.progress,
) -> None:
    """Simulate a device fleet with labelled anomalies: backfill history (--hours) or stream
    live (--rate), to the Kafka input topic or (backfill) a parquet file. Deterministic for a
    seed: a backfill ending at T and a live run starting at T continue the same series."""
    s = settings_from(
        sim_devices=devices, sim_seed=seed, sim_interval_s=interval, input_topic=topic
    )
    if hours is not None and (rate is not None or duration is not None or start is not None):
        raise ConfigError("--hours (backfill) cannot be combined with --rate/--duration/--start")
    if hours is None and (parquet is not None or end is not None):
        raise ConfigError("--parquet and --end need --hours (backfill mode)")
    if hours is not None:
        report = _backfill(s, hours, parquet, _parse_time(end, "--end"), anomaly_rate, progress)
    else:
        from iot_mlops.data.simulate import live_to_kafka

        report = live_to_kafka(
            s, rate, duration, _parse_time(start, "--start"), anomaly_rate, progress=progress,
            console=console,
        )  # fmt: skip
    out.print(report.render())
    if report.failed:
        raise ServiceError(
            f"{report.failed:,} of {report.rows:,} readings were not delivered to "
            f"{s.input_topic}: {report.first_error}",
            fix="check the broker with `iot-mlops stack status` and run again",
        )


def _backfill(
    s: Settings,
    hours: float,
    parquet: Path | None,
    end_ms: int | None,
    anomaly_rate: float,
    progress: bool,
) -> Any:
    from iot_mlops.data import simulate as sim

    if parquet is not None:
        return sim.backfill_to_parquet(s, parquet, hours, end_ms, anomaly_rate)
    return sim.backfill_to_kafka(
        s, hours, end_ms=end_ms, anomaly_rate=anomaly_rate, progress=progress, console=console
    )


@app.command("collect")
@friendly
def collect(
    out_path: Path = typer.Option(..., "--out", help="Parquet file to write."),
    until: str | None = typer.Option(
        None,
        "--until",
        help="Keep readings strictly before this time (ISO 8601, UTC if no offset).",
    ),
    topic: str | None = env_option("--topic", "IOT_MLOPS_INPUT_TOPIC", "Kafka topic"),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Snapshot the input topic (from the beginning up to its end offsets at start) into a
    parquet training set: schema-checked, rejects counted by reason, duplicates dropped."""
    from iot_mlops.data.collect import collect as run_collect

    s = settings_from(input_topic=topic)
    until_ms = _parse_time(until, "--until")
    report = run_collect(s, out_path, until_ms=until_ms, progress=progress, console=console)
    out.print(report.render())


@app.command("train")
@friendly
def train_cmd(
    data: Path = typer.Option(..., "--data", help="Parquet of readings (from collect/simulate)."),
    promote: bool = typer.Option(
        False, "--promote", help="Point the alias at the new version (gated, like `promote`)."
    ),
    time_limit: int | None = env_option(
        "--time-limit", "IOT_MLOPS_TRAIN_TIME_LIMIT_S", "AutoGluon fit budget, s", min=10
    ),
    models: str | None = env_option(
        "--models", "IOT_MLOPS_TRAIN_MODELS", "Comma-separated offline AutoGluon models"
    ),
    prediction_length: int | None = env_option(
        "--prediction-length", "IOT_MLOPS_PREDICTION_LENGTH", "Forecast horizon, steps", min=1
    ),
    context_length: int | None = env_option(
        "--context-length", "IOT_MLOPS_CONTEXT_LENGTH", "History points per forecast", min=8
    ),
    model_name: str | None = typer.Option(None, "--model-name", help="Registered model name"),
    alias: str | None = typer.Option(None, "--alias", help="Alias for --promote"),
) -> None:
    """Fit AutoGluon on the history, evaluate and calibrate on a holdout, log everything to
    MLflow and register the model (optionally promote it)."""
    from iot_mlops.training.pipeline import train

    s = settings_from(
        train_time_limit_s=time_limit, train_models=models, prediction_length=prediction_length,
        context_length=context_length, model_name=model_name, model_alias=alias,
    )  # fmt: skip
    r = train(s, data, promote=promote, console=console)
    table = _train_table(s, r)
    out.print(table)
    if promote and r.promotion is None:
        console.print(f"[bold red]not promoted:[/] {r.promotion_error}", highlight=False)
        raise typer.Exit(1)


def _train_table(s: Settings, r: Any) -> Table:
    """The summary of a training run (a ``TrainResult``)."""
    table = Table(title=f"{s.model_name} version {r.version}")
    table.add_column("")
    table.add_column("value", justify="right")
    m = r.metrics
    rows = [
        ("run", r.run_id),
        ("model", f"{r.best_model} ({r.params['freq']}, horizon {r.params['prediction_length']})"),
        ("series / rows", f"{r.params['n_series']} / {r.params['n_rows']:,}"),
        ("fit time", f"{r.train_seconds:.1f} s"),
        ("holdout MASE", f"{m['mase']:.4f}"),
        ("holdout WQL", f"{m['wql']:.4f}"),
        ("interval coverage", f"{m['coverage']:.3f}"),
        ("threshold (deviation)", f"{r.calibration.threshold:.3f}"),
    ]
    if r.calibration.step_scale:
        k = r.calibration.step_scale
        rows.append(("interval scale, first / last step", f"{k[0]:.2f} / {k[-1]:.2f}"))
    if "f1" in m:
        rows.append(
            ("precision / recall / F1", f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f}")
        )
    if "event_recall" in m:
        rows.append(
            ("anomaly events caught", f"{m['event_recall']:.3f} of {m['labelled_events']:.0f}")
        )
    if r.dropped_series:
        rows.append(("dropped (too short)", str(len(r.dropped_series))))
    if r.promotion is not None:
        rows.append(("alias", f"{r.promotion.alias} → version {r.version}"))
    for k, v in rows:
        table.add_row(k, v)
    return table


@app.command("promote")
@friendly
def promote_cmd(
    version: str | None = typer.Argument(None, help="Model version to promote."),
    alias: str | None = env_option("--alias", "IOT_MLOPS_MODEL_ALIAS", "Alias"),
    force: bool = typer.Option(False, "--force", help="Promote even if its metrics are worse."),
    rollback: bool = typer.Option(
        False, "--rollback", help="Return the alias to the version that held it before."
    ),
    model_name: str | None = typer.Option(None, "--model-name", help="Registered model name"),
) -> None:
    """Point the alias (default production) at VERSION, refused when its holdout metrics are
    worse than the current version's unless --force; or, with --rollback, back at the
    version before. Detectors swap to it at their next alias poll."""
    from iot_mlops.lifecycle import registry

    s = settings_from(model_alias=alias, model_name=model_name)
    if rollback == (version is not None):
        raise ConfigError("give either a VERSION or --rollback", fix="`iot-mlops promote --help`")
    if rollback:
        was, now = registry.rollback(s)
        out.print(
            f"{s.model_name}@{s.model_alias} → version {now} (rolled back from {was})",
            highlight=False,
        )
        return
    d = registry.promote(s, version, force=force)
    note = "" if d.allowed else " [yellow](forced past the gate: " + d.reason + ")[/]"
    prev = f" (was version {d.current})" if d.current and d.current != d.candidate else ""
    out.print(f"{s.model_name}@{d.alias} → version {d.candidate}{prev}{note}", highlight=False)


@app.command("retrain")
@friendly
def retrain_cmd(
    hours: float = typer.Option(
        24.0, "--hours", help="Train on the last HOURS of readings in the input topic."
    ),
    trigger: str = typer.Option(
        "manual", "--trigger", help="Why this cycle runs (recorded): manual, schedule, drift."
    ),
    model_name: str | None = typer.Option(None, "--model-name", help="Registered model name"),
) -> None:
    """One continuous-training cycle: collect the recent window, fit a challenger, register it
    under the alias challenger with its lineage, compare it with production on the same
    recent holdout, and promote it only when it is at least as good (an MLflow run records
    the decision)."""
    from iot_mlops.training.retrain import retrain

    s = settings_from(model_name=model_name)
    d = retrain(s, hours, trigger=trigger, console=console)
    verdict = "[green]promoted[/]" if d.promoted else "[yellow]kept production[/]"
    out.print(
        f"challenger {s.model_name} v{d.challenger} ({d.rows:,} rows, {d.window_start} .. "
        f"{d.window_end}): {verdict}: {d.reason}; decision run {d.run_id}",
        highlight=False,
    )


@app.command("trainer")
@friendly
def trainer_cmd(
    hours: float = typer.Option(24.0, "--hours", help="Each cycle trains on the last HOURS."),
    every_h: float = typer.Option(24.0, "--every", help="A cycle at least every EVERY hours."),
    drift_psi: float = typer.Option(
        0.25, "--drift-psi", help="...and earlier when a metric's input PSI is above this."
    ),
    cooldown_h: float = typer.Option(
        1.0, "--cooldown", help="Hours between drift-triggered cycles at the least."
    ),
    retry_min: float = typer.Option(
        10.0, "--retry", help="Minutes before retrying a failed cycle."
    ),
    poll_s: float = typer.Option(60.0, "--poll", help="Seconds between drift checks."),
    prometheus_url: str | None = typer.Option(
        None, "--prometheus-url", help="Where the detectors' metrics are (default: the stack's)."
    ),
    max_cycles: int | None = typer.Option(None, "--max-cycles", help="Stop after N cycles."),
) -> None:
    """Continuous training: retrain on a schedule and when the input drifts (PSI from
    Prometheus), each cycle as `iot-mlops retrain`. SIGTERM / Ctrl-C stop it between cycles."""
    import signal
    import threading

    from iot_mlops.kafka.stack import Prometheus
    from iot_mlops.training import trainer
    from iot_mlops.training.retrain import retrain

    s = settings_from()
    url = prometheus_url or Prometheus(s).url
    sched = trainer.Schedule(every_h * 3600, drift_psi, cooldown_h * 3600, retry_min * 60)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_a: stop.set())

    def cycle(trigger: str, psi: float | None) -> None:
        d = retrain(s, hours, trigger=trigger, console=console, drift_psi=psi)
        verdict = "promoted" if d.promoted else "kept production"
        console.print(f"trainer: {trigger} cycle: v{d.challenger} {verdict}: {d.reason}")

    console.print(f"trainer: every {every_h:g} h, or at PSI > {drift_psi:g} ({url})")
    n = trainer.run(cycle, sched, lambda: trainer.fleet_psi(url), stop, poll_s, max_cycles)
    console.print(f"trainer: stopped after {n} cycle(s)")


@app.command("models")
@friendly
def models_cmd(
    model_name: str | None = typer.Option(None, "--model-name", help="Registered model name"),
) -> None:
    """Registered versions with their aliases and holdout metrics."""
    from iot_mlops.lifecycle.registry import list_versions

    s = settings_from(model_name=model_name)
    versions = list_versions(s)
    if not versions:
        console.print(f"no versions of {s.model_name!r} yet: run `iot-mlops train --data PATH`")
        return
    table = Table(title=s.model_name)
    for col in ("version", "aliases", "model", "MASE", "WQL", "F1", "threshold", "created (UTC)"):
        table.add_column(col)

    def num(v: float | None, fmt: str = ".4f") -> str:
        return "-" if v is None else format(v, fmt)

    for v in versions:
        table.add_row(
            v.version, ", ".join(v.aliases) or "-", v.best_model or "-",
            num(v.metrics.get("mase")), num(v.metrics.get("wql")),
            num(v.metrics.get("f1"), ".3f"), num(v.metrics.get("threshold"), ".3f"),
            v.created.strftime("%Y-%m-%d %H:%M:%S"),
        )  # fmt: skip
    out.print(table)


class EvaluateOptions:
    """The options of `evaluate` (kept out of its signature so it reads as the steps)."""

    data_dir = typer.Argument(
        ...,
        help="Directory of CSV files (any depth), one device each: a timestamp column and one "
        "column per metric (timestamp,value: one series).",
    )
    labels = typer.Option(
        None,
        "--labels",
        help="LABELS.json: {relative CSV path: \\[\\[start, end], ...]}. Optional with "
        "--label-column.",
    )
    out_dir = typer.Option(
        ..., "--out", help="Output directory: one CSV per input file, plus scores.json."
    )
    probation = typer.Option(
        None,
        "--probation",
        min=0.01,
        max=0.9,
        help="Share of each file's first rows the model may train on (not scored) "
        "\\[default: 0.15].",
    )
    train_rows = typer.Option(
        None,
        "--train-rows",
        min=1,
        help="Fixed number of each file's first rows to train on (not scored), instead of "
        "--probation (SKAB's protocol: 400).",
    )
    sep = typer.Option(
        None, "--sep", help="Column separator (default: sniffed from the header: , ; or tab)."
    )
    timestamp_column = typer.Option(
        None,
        "--timestamp-column",
        help="Timestamp column (default: the first of timestamp, datetime, date_time, time, "
        "date, ts; any case).",
    )
    label_column = typer.Option(
        None,
        "--label-column",
        help="A 0/1 column: its runs of 1 are labelled windows (with --labels: both).",
    )
    ignore_column = typer.Option(
        [], "--ignore-column", help="A column that is not a metric (repeatable)."
    )
    changepoint_column = typer.Option(
        None,
        "--changepoint-column",
        help="A 0/1 column marking the true changepoints of the changepoint score (default: "
        "the label transitions).",
    )
    time_limit = typer.Option(120, "--time-limit", min=10, help="AutoGluon fit budget, s.")
    models = env_option(
        "--models", "IOT_MLOPS_TRAIN_MODELS", "Comma-separated offline AutoGluon models"
    )
    model_name = typer.Option(
        None,
        "--model-name",
        help="Registered model to train and serve (default: <model name>-evaluation).",
    )
    partitions = typer.Option(
        1,
        "--partitions",
        min=1,
        help="Partitions of the evaluation's topics (1 keeps every batch spanning all files).",
    )
    keep_topics = typer.Option(
        False, "--keep-topics", help="Keep the evaluation's Kafka topics (default: deleted)."
    )
    per_file = typer.Option(False, "--per-file", help="Also print one row per file.")


@app.command("evaluate")
@friendly
def evaluate_cmd(
    data_dir: Path = EvaluateOptions.data_dir,
    labels: Path | None = EvaluateOptions.labels,
    out_dir: Path = EvaluateOptions.out_dir,
    probation: float | None = EvaluateOptions.probation,
    train_rows: int | None = EvaluateOptions.train_rows,
    sep: str | None = EvaluateOptions.sep,
    timestamp_column: str | None = EvaluateOptions.timestamp_column,
    label_column: str | None = EvaluateOptions.label_column,
    ignore_column: list[str] = EvaluateOptions.ignore_column,
    changepoint_column: str | None = EvaluateOptions.changepoint_column,
    time_limit: int = EvaluateOptions.time_limit,
    models: str | None = EvaluateOptions.models,
    model_name: str | None = EvaluateOptions.model_name,
    partitions: int = EvaluateOptions.partitions,
    keep_topics: bool = EvaluateOptions.keep_topics,
    per_file: bool = EvaluateOptions.per_file,
) -> None:
    """Causal evaluation on labelled CSV files: train one model on each file's first rows
    (--train-rows or --probation) only, stream every reading through Kafka to the real
    detector, write each file's scores, onsets and episodes, score them against the labels
    (NAB-style profiles, point- and event-wise F1, SKAB's outlier F1/FAR/MAR and changepoint
    score), write OUT/scores.json and log an MLflow evaluation run."""
    from iot_mlops.evaluation.datasets import ReadOptions
    from iot_mlops.evaluation.pipeline import evaluate

    if probation is not None and train_rows is not None:
        raise ConfigError("--probation and --train-rows exclude each other: give one")
    if labels is None and label_column is None:
        raise ConfigError(
            "no labels given", fix="give --labels LABELS.json, --label-column COLUMN, or both"
        )
    read = ReadOptions(
        probation=probation if probation is not None else 0.15, train_rows=train_rows, sep=sep,
        timestamp_column=timestamp_column, label_column=label_column,
        ignore_columns=tuple(ignore_column), changepoint_column=changepoint_column,
    )  # fmt: skip
    s = settings_from(train_models=models)
    r = evaluate(
        s, data_dir, labels, out_dir, time_limit_s=time_limit, model_name=model_name,
        partitions=partitions, keep_topics=keep_topics, console=console, read=read,
    )  # fmt: skip
    r.report.render(out, per_file=per_file)
    out.print(_evaluation_table(r.summary, r.run_id, out_dir))


def _evaluation_table(e: dict[str, Any], run_id: str | None, out_dir: Path) -> Table:
    """The summary of an evaluation run."""
    table = Table(title="Evaluation run")
    table.add_column("")
    table.add_column("value", justify="right")
    outcomes = ", ".join(f"{k} {v:,}" for k, v in e["outcomes"].items())
    for k, v in (
        ("files / rows / readings", f"{e['files']} / {e['rows']:,} / {e['readings']:,}"),
        ("rows by outcome", outcomes),
        ("model", f"{e['model_name']} version {e['model_version']} ({e['best_model']})"),
        ("train (fit, backtest, register)", f"{e['train_seconds']:.1f} s"),
        ("stream through the detector", f"{e['stream_seconds']:.1f} s"),
        ("total", f"{e['total_seconds']:.1f} s"),
        ("MLflow run", run_id or "-"),
        ("results", str(out_dir)),
    ):
        table.add_row(k, v)
    return table
