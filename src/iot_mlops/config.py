"""The one settings object.

Every tunable lives here. Values come from (highest first): CLI flags (applied with
``Settings.with_overrides``), environment variables, then the defaults below. Two variables
keep their ecosystem names (``KAFKA_BOOTSTRAP_SERVERS``, ``MLFLOW_TRACKING_URI``); the rest are
``IOT_MLOPS_<FIELD>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from iot_mlops.scoring.names import CHANNELS


def _checkout_root() -> Path:
    """The source checkout holding this package (src layout), else the working directory."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").exists() else Path.cwd()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IOT_MLOPS_", extra="ignore", populate_by_name=True
    )

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS",
            "IOT_MLOPS_KAFKA_BOOTSTRAP_SERVERS",
            "kafka_bootstrap_servers",
        ),
    )
    # Extra librdkafka properties for every client (SASL/SSL etc.), as a JSON object in
    # IOT_MLOPS_KAFKA_CLIENT_CONFIG, e.g. {"security.protocol": "SASL_SSL", ...}.
    kafka_client_config: dict[str, Any] = Field(default_factory=dict)
    input_topic: str = "iot_sensor_data"
    anomalies_topic: str = "iot_anomalies"
    dlq_topic: str = "iot_sensor_data.dlq"
    # Optional audit stream: when set, the detector also publishes every reading's result
    # (outcome, score, decision, forecast, source offset) here, in the same transaction.
    # `iot-mlops evaluate` uses it to score every row.
    scores_topic: str = ""
    input_partitions: int = Field(6, ge=1)
    consumer_group: str = "iot-anomaly-detector"
    # Readings are ~160 bytes; anything far larger is a broken or hostile producer.
    max_message_bytes: int = Field(16_384, ge=256)
    # A dead letter keeps at most this much of the refused message's value and key (the rest
    # is cut and the cut is marked in headers): a copy of a ~1 MB input plus headers exceeds
    # the broker's message limit and could never be published. 64 KiB is far more than any
    # reading and far under Kafka's default 1 MiB limit.
    dlq_max_value_bytes: int = Field(65_536, ge=0)
    dlq_max_key_bytes: int = Field(1_024, ge=0)
    # Event-time bounds against the Kafka record timestamp (set when the reading was
    # produced). A reading further ahead is dead-lettered (reason clock_skew): one reading
    # dated 2199 would otherwise make every later reading of its series late. 1 h is the
    # bound Kafka 4 brokers put on record timestamps ahead of their clock by default
    # (message.timestamp.after.max.ms). 0 disables.
    event_time_max_ahead_s: float = Field(3_600.0, ge=0)
    # How far behind its record timestamp a reading may be; 0 (the default) disables it,
    # because backfills, `evaluate` replays and devices that buffer while offline produce
    # old event times with a current record timestamp. Set it (e.g. 86400) where every
    # producer is live, to dead-letter readings of a clock that jumped backwards.
    event_time_max_behind_s: float = Field(0.0, ge=0)

    # Kafka security (docs/security.md). The named settings cover what `stack up --secure`
    # and the Compose file use: SASL (SCRAM) over TLS, checked against a CA file; anything
    # else goes in kafka_client_config, which wins over them.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    # The CA certificate (PEM) that signed the brokers' certificates; empty: the system's.
    kafka_ssl_ca_location: str = ""

    # --- MLflow ------------------------------------------------------------------------------
    mlflow_tracking_uri: str = Field(
        "http://127.0.0.1:5000",
        validation_alias=AliasChoices(
            "MLFLOW_TRACKING_URI", "IOT_MLOPS_MLFLOW_TRACKING_URI", "mlflow_tracking_uri"
        ),
    )
    # MLflow's basic-auth credentials and the CA of an https tracking server, under MLflow's
    # own variable names (its client reads them; these fields carry them from CLI and tests).
    mlflow_tracking_username: str = Field(
        "",
        validation_alias=AliasChoices(
            "MLFLOW_TRACKING_USERNAME", "IOT_MLOPS_MLFLOW_TRACKING_USERNAME",
            "mlflow_tracking_username",
        ),
    )  # fmt: skip
    mlflow_tracking_password: SecretStr = Field(
        SecretStr(""),
        validation_alias=AliasChoices(
            "MLFLOW_TRACKING_PASSWORD", "IOT_MLOPS_MLFLOW_TRACKING_PASSWORD",
            "mlflow_tracking_password",
        ),
    )  # fmt: skip
    mlflow_tracking_server_cert_path: str = Field(
        "",
        validation_alias=AliasChoices(
            "MLFLOW_TRACKING_SERVER_CERT_PATH", "IOT_MLOPS_MLFLOW_TRACKING_SERVER_CERT_PATH",
            "mlflow_tracking_server_cert_path",
        ),
    )  # fmt: skip
    experiment_name: str = "IoT Anomaly Detection"
    model_name: str = "AutoGluonIoTAnomalyDetector"
    model_alias: str = "production"
    # Model integrity (lifecycle/integrity.py): `train` tags each version with the SHA-256 of
    # its artifact files, and with an HMAC of it when a signing key is set; the detector checks
    # before it unpickles anything. With a key set, a version without a valid HMAC is refused.
    model_signing_key: SecretStr = SecretStr("")
    # Refuse versions that carry no digest (registered by hand or by an older iot-mlops).
    model_require_digest: bool = True

    # --- embedded stack ----------------------------------------------------------------------
    state_dir: Path = Path(".iot-mlops")
    # Where `make setup` puts the Kafka jars (git-ignored): the checkout's .cache/kafka-libs.
    kafka_libs_dir: Path = Field(default_factory=lambda: _checkout_root() / ".cache" / "kafka-libs")
    bind_host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    mlflow_port: int = 5000
    # Host headers the embedded MLflow accepts, comma-separated (its DNS-rebinding guard);
    # empty: the bind host (and localhost on loopback), with and without the port.
    mlflow_allowed_hosts: str = ""
    prometheus_port: int = 9090
    metrics_port: int = 8000
    # The detector's /metrics and /healthz bind here; Compose sets 0.0.0.0 inside containers.
    metrics_host: str = "127.0.0.1"
    # Seconds each service may take to become healthy in `stack up`.
    startup_timeout_s: float = 180.0
    kafka_heap: str = "-Xms256m -Xmx1g"

    # --- simulator ---------------------------------------------------------------------------
    sim_seed: int = 42
    sim_devices: int = Field(10, ge=1)
    # Seconds between two readings of one series (the series frequency).
    sim_interval_s: int = Field(60, ge=1)

    # --- training ----------------------------------------------------------------------------
    # Offline model set (nothing downloads from a model hub). Comma-separated AutoGluon names.
    train_models: str = "DirectTabular,RecursiveTabular"
    train_time_limit_s: int = Field(300, ge=10)
    prediction_length: int = Field(12, ge=1)
    # Points of history the model sees per forecast; the detector keeps this many per series.
    context_length: int = Field(256, ge=8)
    # Calendar features (minute of hour, hour of day, day of week) for the tabular models,
    # computed from the readings' timestamps.
    train_date_features: bool = True
    quantile_levels: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5, 0.9, 0.95, 0.99)
    # Share of each series (its last part) held out for accuracy, calibration and replay.
    holdout_fraction: float = Field(0.2, gt=0, lt=0.9)
    # Calibrated so that clean holdout data raises this share of false alarms.
    target_false_alarm_rate: float = Field(0.002, gt=0, lt=0.5)
    # Fit, per horizon step, how wide the model's interval is against its clean errors and
    # measure deviations in the corrected interval (scoring/calibrate.py ``step_scale``).
    calibrate_step_scale: bool = True

    # --- detector ----------------------------------------------------------------------------
    min_history: int = Field(32, ge=1)  # points before a series is scored ("warming up")
    # Readings in one anomaly episode after which the series relearns the departure's level
    # (the model's context takes the real values; the channels forget the old level). The
    # episode stays open while the readings stay away from the level before the onset.
    regime_relearn_after: int = Field(30, ge=0)
    # Readings after which an episode closes as accepted (the departure is the new normal),
    # series and device episodes alike. 0 = only when the series is back.
    episode_max_readings: int = Field(100, ge=0)
    # The departure from the pre-onset level holds an episode while its probability is at
    # most target_false_alarm_rate ** this (a stricter bar than episode_hold: a slow drift
    # away from a short history is not a departure to hold on to).
    episode_departure_hold: float = Field(2.0, gt=0)
    # --- scoring (scoring/channels.py, scoring/episodes.py) ---------------------------------
    # Evidence channels, comma-separated, among residual, shift, level, stuck, seasonal.
    channels: str = "residual,shift,level,stuck,seasonal"
    # Values each channel's per-series tail model remembers, and needs before it speaks.
    tail_window: int = Field(2000, ge=50)
    tail_min_points: int = Field(100, ge=10)
    # A tail fitted on k points is widened by 1 + this / sqrt(k): fewer false alarms early.
    tail_conservative: float = Field(0.5, ge=0)
    # The longest season (in steps) the seasonal channel looks for in a series' history; it
    # keeps three times this many values per series (float32). 2,016 = a week of 5-minute data.
    season_max_period: int = Field(2016, ge=0)
    # An episode holds while the evidence is at most target_false_alarm_rate ** episode_hold
    # and closes after episode_close_after ordinary readings in a row.
    episode_hold: float = Field(0.75, gt=0, le=1)
    episode_close_after: int = Field(10, ge=1)
    # A device's episode (its metrics combined) closes after this many ordinary time steps.
    device_episode_close_after: int = Field(30, ge=1)
    # A batch (one transaction) closes at batch_max_messages or after batch_max_wait_ms,
    # whichever comes first: the count sizes transactions for throughput under load, the time
    # bound keeps latency at low load from waiting for a full batch. Each batch costs one
    # transaction commit (a few ms), so 100 ms bounds that overhead at ~10 commits/s.
    batch_max_messages: int = Field(5000, ge=1)
    batch_max_wait_ms: int = Field(100, ge=1)
    # /livez turns 503 when the detector's loop (polling, scoring, rebuilding state) has not
    # moved for this long: stuck, to be restarted. Kafka's own bound on a stuck consumer
    # (max.poll.interval.ms) is 600 s, which a state rebuild may use.
    stall_after_s: float = Field(600.0, gt=0)
    alias_poll_interval_s: float = Field(10.0, gt=0)
    # A version that failed to load is retried after the poll interval, doubling per failed
    # attempt up to this many seconds.
    model_retry_max_s: float = Field(300.0, gt=0)
    # Messages per partition re-read before the committed offset to rebuild series state.
    rebuild_messages: int = Field(20_000, ge=0)
    # Of those, each series replays its last context + 2 horizons + this many readings (the
    # span its channels' tail models learn from: tail_window).
    rebuild_scale_points: int = Field(2000, ge=0)
    series_gauge_limit: int = Field(50, ge=0)
    # A series is silent (one `silent` event, then `resumed` or `expired`) once its
    # partition's log time (Kafka record timestamps) is this far past its last reading, and
    # its state is dropped once it is expire_after_s past. 0 = from the served model's grid:
    # silent after 10 missing steps (10 min at 1-minute data: a gap of a few steps is normal,
    # ten in a row an outage), expired after one context length of steps (256 min at the
    # defaults: after such a gap the window is cleared on return anyway, see
    # scoring/state.py), and at least twice the silence.
    silent_after_s: float = Field(0.0, ge=0)
    expire_after_s: float = Field(0.0, ge=0)
    # device_type and metric_name are metric labels but come from the input: the first this
    # many distinct values of each are kept, later ones are reported as "other" (counted in
    # iot_metric_labels_folded_total), so a producer inventing names cannot grow /metrics.
    max_label_values: int = Field(50, ge=1)
    transaction_timeout_ms: int = Field(60_000, ge=1000)
    # Names this detector replica, unique within its consumer group (a pod or container
    # name): its producer's transactional.id is `<consumer_group>-<instance_id>`, so a
    # restarted replica fences its predecessor and aborts the transaction it left open at
    # once; otherwise read_committed readers of the outputs wait transaction_timeout_ms for
    # the broker to abort it. Empty: a random id per process (a producer the process
    # replaces still fences the one before it).
    instance_id: str = Field("", max_length=200, pattern=r"^[A-Za-z0-9._-]*$")
    # With no instance_id: name the replica after its host name. A container's host name is
    # its id, the same across its restarts and different per replica (`docker compose up
    # --scale`), which Compose cannot otherwise give each replica. Not for several detectors
    # on one host: they would fence each other.
    instance_id_from_hostname: bool = False
    # How long the group waits for a silent replica before its partitions move (the broker
    # accepts 6 s to 30 min by default). With named replicas, longer rides out a restart.
    session_timeout_ms: int = Field(10_000, ge=1000)
    # A named replica joins as a static group member (group.instance.id = its name, KIP-345):
    # back within session_timeout_ms, it gets its partitions back without a rebalance of the
    # others. Off by default: when a broker outage makes the detector replace its consumer,
    # the new consumer fences the old one with the same id and librdkafka raises a fatal
    # error (seen in the single-broker restart fault test), so it needs that path reworked.
    static_membership: bool = False

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, v: str) -> str:
        names = [c.strip() for c in v.split(",") if c.strip()]
        bad = [c for c in names if c not in CHANNELS]
        if bad or not names:
            raise ValueError(
                f"unknown channel(s) {', '.join(bad) or '(none)'}; use {','.join(CHANNELS)}"
            )
        return ",".join(names)

    @model_validator(mode="after")
    def _expiry_after_silence(self) -> Settings:
        if (
            self.silent_after_s
            and self.expire_after_s
            and (self.expire_after_s <= self.silent_after_s)
        ):
            raise ValueError(
                f"expire_after_s ({self.expire_after_s:g}) must be longer than "
                f"silent_after_s ({self.silent_after_s:g})"
            )
        return self

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with CLI flags applied; ``None`` means 'flag not given'."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return self.model_copy(update=given) if given else self

    def kafka_common(self) -> dict[str, Any]:
        """librdkafka properties shared by every client we create."""
        return {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            **self.kafka_security(),
            **self.kafka_client_config,
        }

    def kafka_security(self) -> dict[str, str]:
        """The librdkafka properties of the named security settings (none for PLAINTEXT)."""
        proto = self.kafka_security_protocol
        out: dict[str, str] = {} if proto == "PLAINTEXT" else {"security.protocol": proto}
        if proto.startswith("SASL"):
            out["sasl.mechanism"] = self.kafka_sasl_mechanism
            out["sasl.username"] = self.kafka_sasl_username
            out["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if proto.endswith("SSL") and self.kafka_ssl_ca_location:
            out["ssl.ca.location"] = self.kafka_ssl_ca_location
        return out

    def mlflow_client_env(self) -> dict[str, str]:
        """MLflow's own environment variables for the credentials and CA set here."""
        out = {}
        if self.mlflow_tracking_username:
            out["MLFLOW_TRACKING_USERNAME"] = self.mlflow_tracking_username
            out["MLFLOW_TRACKING_PASSWORD"] = self.mlflow_tracking_password.get_secret_value()
        if self.mlflow_tracking_server_cert_path:
            out["MLFLOW_TRACKING_SERVER_CERT_PATH"] = self.mlflow_tracking_server_cert_path
        return out
