"""The stream runner: owns consume → score → produce → commit, rebalances, the model watcher,
signals and errors.

Exactly-once: each consumed batch is one Kafka transaction holding its anomalies, its dead
letters and the consumed offsets (``send_offsets_to_transaction``). Readers of the output use
``isolation.level=read_committed``. If a transaction aborts, the consumer seeks back to the
committed offsets and the affected series' state is rebuilt, so the batch is redone as if the
failed attempt never happened. A SIGKILLed detector leaves an open transaction that the broker
aborts (or the next instance's producer fences); its successor resumes from the committed
offsets.

On partition assignment each series' window is rebuilt by replaying the recent log before the
committed offset through the same engine (context only, nothing is emitted), so a replica that
takes over a partition scores like the one that left.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import uuid
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from iot_mlops.config import Settings
from iot_mlops.detector.metrics import DetectorMetrics
from iot_mlops.events import AnomalyEvent, Reading, ReadingError, decode_reading, encode_anomaly
from iot_mlops.scoring.alarms import AlarmPolicy
from iot_mlops.scoring.engine import Engine, ForecasterLike, Result

log = logging.getLogger("iot_mlops.detector")

# How long send_offsets_to_transaction may block before the producer is taken as stuck.
SEND_OFFSETS_DEADLINE_S = 45

Resolver = Callable[[Settings], str | None]
Loader = Callable[[Settings, str], ForecasterLike]


def _default_resolver(settings: Settings) -> str | None:
    from iot_mlops.lifecycle.registry import resolve_alias

    return resolve_alias(settings)


def _default_loader(settings: Settings, version: str) -> ForecasterLike:
    from iot_mlops.lifecycle.registry import load_forecaster

    return load_forecaster(settings, version=version)


class ModelWatcher(threading.Thread):
    """Polls the registry alias and loads a newly promoted version in the background; the
    runner swaps it in between batches. A version that fails to load is counted, logged and
    not retried until the alias moves again; the old model keeps serving."""

    def __init__(
        self,
        settings: Settings,
        metrics: DetectorMetrics,
        stop: threading.Event,
        resolve: Resolver = _default_resolver,
        load: Loader = _default_loader,
    ) -> None:
        super().__init__(name="model-watcher", daemon=True)
        self.s, self.m, self.stop_event = settings, metrics, stop
        self.resolve, self.load = resolve, load
        self.current: str | None = None
        self.failed: set[str] = set()
        self._pending: ForecasterLike | None = None
        self._lock = threading.Lock()
        self.wake = threading.Event()

    def take(self) -> ForecasterLike | None:
        with self._lock:
            model, self._pending = self._pending, None
            return model

    def poll_once(self) -> None:
        s = self.s
        try:
            version = self.resolve(s)
            self.m.registry_reachable.set(1)
        except Exception as e:  # the registry being down must never stop scoring
            self.m.registry_reachable.set(0)
            log.warning(
                "MLflow registry at %s unreachable (%s); keeping the current model. "
                "Start it with `iot-mlops stack up` or set MLFLOW_TRACKING_URI.",
                s.mlflow_tracking_uri, str(e).splitlines()[0][:200],
            )  # fmt: skip
            return
        if version is None:
            log.warning(
                "no version of model %r has alias %r yet; waiting. Promote one with "
                "`iot-mlops train --data … --promote` or `iot-mlops promote VERSION`.",
                s.model_name, s.model_alias,
            )  # fmt: skip
            return
        if version == self.current or version in self.failed:
            return
        log.info("loading %s version %s (alias %s)", s.model_name, version, s.model_alias)
        try:
            model = self.load(s, version)
        except Exception as e:
            self.failed.add(version)
            self.m.model_reloads.labels(result="failure").inc()
            log.error(
                "loading %s version %s failed; keeping version %s: %s",
                s.model_name, version, self.current, str(e).splitlines()[0][:300],
            )  # fmt: skip
            return
        with self._lock:
            self._pending = model
        self.current = version

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.poll_once()
            self.wake.wait(self.s.alias_poll_interval_s)
            self.wake.clear()


@dataclass
class BatchOutput:
    anomalies: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, value)
    dead_letters: list[tuple[Message, ReadingError]] = field(default_factory=list)
    scores: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, value)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)


class Detector:
    def __init__(
        self,
        settings: Settings,
        metrics: DetectorMetrics | None = None,
        resolve: Resolver = _default_resolver,
        load: Loader = _default_loader,
    ) -> None:
        self.s = settings
        self.m = metrics or DetectorMetrics()
        self.stop_event = threading.Event()
        self.watcher = ModelWatcher(settings, self.m, self.stop_event, resolve, load)
        self.policy = AlarmPolicy(settings.alarm_min_consecutive, settings.alarm_cooldown)
        self.engine: Engine | None = None
        self.assigned: set[tuple[str, int]] = set()
        self.partition_series: dict[tuple[str, int], set[str]] = {}
        self.gauge_series: set[str] = set()
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.batches = 0

    # --- state shown by /healthz -------------------------------------------------------------
    def ready(self) -> bool:
        return self.engine is not None and bool(self.assigned)

    def stop(self) -> None:
        self.stop_event.set()
        self.watcher.wake.set()

    # --- lifecycle ----------------------------------------------------------------------------
    def run(self) -> int:
        s = self.s
        self.m.model_loaded.set(0)
        self.watcher.start()
        if not self._wait_for_model():
            return 0
        self.consumer = Consumer(
            {
                **s.kafka_common(),
                "group.id": s.consumer_group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "partition.assignment.strategy": "cooperative-sticky",
                "enable.partition.eof": False,
                # Rebuilding state on assignment replays the log through the model.
                "max.poll.interval.ms": 600_000,
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 2_000,
                "error_cb": _log_kafka_error,
            }
        )
        self.producer = self._new_producer()
        self.consumer.subscribe(
            [s.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info("consuming %s as group %s", s.input_topic, s.consumer_group)
        last_lag = 0.0
        try:
            while not self.stop_event.is_set():
                self._maybe_swap_model()
                msgs = self.consumer.consume(s.batch_max_messages, timeout=s.poll_timeout_s)
                if msgs:
                    self._process_batch(msgs)
                now = time.monotonic()
                if now - last_lag > 2.0:
                    self._update_lag()
                    last_lag = now
        finally:
            self._shutdown()
        return 0

    def _wait_for_model(self) -> bool:
        while not self.stop_event.is_set():
            model = self.watcher.take()
            if model is not None:
                self._use_model(model)
                return True
            self.stop_event.wait(0.2)
        return False

    def _use_model(self, model: ForecasterLike) -> None:
        s = self.s
        if self.engine is None:
            self.engine = Engine(
                model, self.policy, min_history=s.min_history,
                accept_after=s.regime_accept_after, on_model_call=self._observe_model_call,
            )  # fmt: skip
        else:
            self.engine.set_model(model)
        self.m.model_info.clear()
        self.m.model_info.labels(s.model_name, str(model.version), s.model_alias).set(1)
        self.m.model_loaded.set(1)
        self.m.model_reloads.labels(result="success").inc()
        log.info("using %s version %s", s.model_name, model.version)

    def _maybe_swap_model(self) -> None:
        model = self.watcher.take()
        if model is not None:
            self._use_model(model)

    def _observe_model_call(self, n_series: int, seconds: float) -> None:
        self.m.forecast_batch_size.observe(n_series)
        self.m.model_call_seconds.observe(seconds)

    # --- the batch ----------------------------------------------------------------------------
    def _process_batch(self, msgs: list[Message]) -> None:
        assert self.engine is not None and self.producer is not None and self.consumer is not None
        s, m = self.s, self.m
        out = BatchOutput()
        readings: list[Reading] = []
        sources: list[tuple[int, int]] = []  # (partition, offset) of each reading
        stamps: list[int] = []
        stale = 0
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer error: %s", err)
                continue
            key = (msg.topic(), msg.partition())
            if key not in self.assigned:
                # Fetched before the partition was revoked inside this consume() call: its
                # series' state is gone and its new owner resumes from the committed offset.
                # Scoring it here would score it from scratch (no history, so missed
                # anomalies) and commit offsets for a partition this replica no longer owns.
                stale += 1
                continue
            out.offsets[key] = msg.offset() + 1
            stamps.append(msg.timestamp()[1])
            try:
                r = decode_reading(msg.value(), s.max_message_bytes)
            except ReadingError as e:
                out.dead_letters.append((msg, e))
                continue
            readings.append(r)
            sources.append((msg.partition(), msg.offset()))
            self.partition_series.setdefault(key, set()).add(r.series_id)
        if stale:
            log.info("skipped %d message(s) of partitions revoked meanwhile", stale)
        results = self.engine.process(readings)
        if s.scores_topic:
            out.scores = [
                (res.reading.device_id.encode(), _score_record(res, src))
                for res, src in zip(results, sources, strict=True)
            ]
        outcomes: Tally[tuple[str, str, str]] = Tally()
        now_ms = int(time.time() * 1000)
        version = self.engine.version
        for res in results:
            r = res.reading
            outcomes[(r.device_type, r.metric_name, res.outcome.value)] += 1
            sc = res.scored
            if sc is None:
                continue
            m.anomaly_score.labels(r.device_type, r.metric_name).observe(sc.score)
            if r.is_anomaly is not None:
                if sc.alarm and r.is_anomaly:
                    m.true_positives.labels(r.device_type, r.metric_name).inc()
                elif sc.alarm:
                    m.false_positives.labels(r.device_type, r.metric_name).inc()
                elif r.is_anomaly:
                    m.false_negatives.labels(r.device_type, r.metric_name).inc()
            self._series_gauges(r, sc)
            if sc.alarm:
                ev = AnomalyEvent(
                    device_id=r.device_id, device_type=r.device_type, metric_name=r.metric_name,
                    timestamp_ms=r.timestamp_ms, actual_value=r.metric_value,
                    predicted_value=sc.predicted, lower=sc.lower, upper=sc.upper,
                    anomaly_score=round(sc.score, 6), model_name=s.model_name,
                    model_version=sc.model_version or version, model_alias=s.model_alias,
                    detection_time_ms=now_ms, labelled_anomaly=r.is_anomaly,
                )  # fmt: skip
                out.anomalies.append((r.device_id.encode(), encode_anomaly(ev)))
        self._commit(out)
        # Counted only once the batch is committed: a redone batch is not counted twice.
        for (dtype, metric, outcome), n in outcomes.items():
            m.readings.labels(dtype, metric, outcome).inc(n)
        anomalies_by: Tally[tuple[str, str]] = Tally()
        for res in results:
            if res.scored is not None and res.scored.alarm:
                anomalies_by[(res.reading.device_type, res.reading.metric_name)] += 1
        for (dtype, metric), n in anomalies_by.items():
            m.anomalies.labels(dtype, metric).inc(n)
        for _msg, e in out.dead_letters:
            m.dead_letters.labels(e.reason).inc()
        done_ms = time.time() * 1000
        for ts in stamps:
            if ts > 0:
                m.detection_latency.observe(max(0.0, (done_ms - ts) / 1000))
        m.series_tracked.set(len(self.engine.series))
        m.series_warming_up.set(self.engine.warming_up())
        self.batches += 1

    def _series_gauges(self, r: Reading, sc: object) -> None:
        key = r.series_id
        if key not in self.gauge_series:
            if len(self.gauge_series) >= self.s.series_gauge_limit:
                return
            self.gauge_series.add(key)
        labels = (r.device_id, r.metric_name)
        self.m.series_actual.labels(*labels).set(r.metric_value)
        self.m.series_predicted.labels(*labels).set(sc.predicted)  # type: ignore[attr-defined]
        self.m.series_lower.labels(*labels).set(sc.lower)  # type: ignore[attr-defined]
        self.m.series_upper.labels(*labels).set(sc.upper)  # type: ignore[attr-defined]
        self.m.series_score.labels(*labels).set(sc.score)  # type: ignore[attr-defined]

    def _commit(self, out: BatchOutput) -> None:
        """Anomalies + dead letters + consumed offsets in one transaction."""
        assert self.producer is not None and self.consumer is not None
        s, p = self.s, self.producer
        if not out.offsets:
            return  # nothing consumed that this replica owns (e.g. only stale messages)
        try:
            p.begin_transaction()
            for key, value in out.anomalies:
                p.produce(s.anomalies_topic, value=value, key=key)
            for key, value in out.scores:
                p.produce(s.scores_topic, value=value, key=key)
            for msg, e in out.dead_letters:
                p.produce(
                    s.dlq_topic,
                    value=msg.value(),
                    key=msg.key(),
                    headers=[
                        ("reason", e.reason.encode()),
                        ("detail", e.detail[:500].encode("utf-8", "replace")),
                        ("source.topic", msg.topic().encode()),
                        ("source.partition", str(msg.partition()).encode()),
                        ("source.offset", str(msg.offset()).encode()),
                    ],
                )
            offsets = [TopicPartition(t, part, off) for (t, part), off in out.offsets.items()]
            if not self._send_offsets(p, offsets):
                # librdkafka can block in send_offsets_to_transaction() forever, past its
                # timeout, when the group coordinator goes away mid-transaction (seen here
                # with a single broker restarted; confluentinc/librdkafka#5456, #5511). The
                # stuck call is left to its daemon thread with its producer, whose open
                # transaction never commits (the broker aborts it after
                # transaction.timeout.ms), and a fresh producer redoes the batch from the
                # committed offsets.
                log.error(
                    "sending offsets to the transaction hung for %ds; replacing the producer "
                    "and redoing the batch from committed offsets", SEND_OFFSETS_DEADLINE_S,
                )  # fmt: skip
                self.m.transactions.labels(result="aborted").inc()
                self.producer = self._new_producer()
                self._rewind(list(out.offsets))
                return
            self._commit_transaction()
            self.m.transactions.labels(result="committed").inc()
        except KafkaException as e:
            err: KafkaError = e.args[0]
            if err.txn_requires_abort():
                log.warning(
                    "transaction aborted (%s); redoing the batch from committed offsets", err
                )
                p.abort_transaction(60)
                self.m.transactions.labels(result="aborted").inc()
                self._rewind(list(out.offsets))
                return
            raise

    def _new_producer(self) -> Producer:
        s = self.s
        p = Producer(
            {
                **s.kafka_common(),
                "transactional.id": f"{s.consumer_group}-{uuid.uuid4().hex[:12]}",
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "transaction.timeout.ms": s.transaction_timeout_ms,
                "error_cb": _log_kafka_error,
            }
        )
        p.init_transactions(60)
        return p

    def _send_offsets(self, p: Producer, offsets: list[TopicPartition]) -> bool:
        """``send_offsets_to_transaction`` with a hard deadline per call (False if a call
        hung) and retries of retriable errors: with the broker away (a restart) the call fails
        with e.g. ``_TRANSPORT``, which librdkafka documents as retriable, not as fatal."""
        assert self.consumer is not None
        give_up = time.monotonic() + self.s.transaction_timeout_ms / 1000 + 60
        for attempt in itertools.count():
            meta = self.consumer.consumer_group_metadata()
            failed: list[KafkaException] = []

            def call(meta: object = meta, failed: list = failed) -> None:
                try:
                    p.send_offsets_to_transaction(offsets, meta, SEND_OFFSETS_DEADLINE_S * 2 / 3)
                except KafkaException as e:  # re-raised in the runner's thread
                    failed.append(e)

            t = threading.Thread(target=call, name="send-offsets", daemon=True)
            t.start()
            t.join(SEND_OFFSETS_DEADLINE_S)
            if t.is_alive():
                return False
            if not failed:
                return True
            err: KafkaError = failed[0].args[0]
            if err.txn_requires_abort() or not err.retriable() or time.monotonic() > give_up:
                raise failed[0]
            log.warning("sending offsets to the transaction failed (%s); retrying", err)
            time.sleep(min(5.0, 0.2 * 2**attempt))
        raise AssertionError("unreachable")

    def _commit_transaction(self) -> None:
        assert self.producer is not None
        for attempt in range(10):
            try:
                self.producer.commit_transaction(60)
                return
            except KafkaException as e:
                if e.args[0].retriable() and attempt < 9:
                    time.sleep(min(5.0, 0.2 * 2**attempt))
                    continue
                raise

    def _rewind(self, partitions: list[tuple[str, int]]) -> None:
        """After an abort: back to the committed offsets, with state rebuilt to match."""
        assert self.consumer is not None
        # Partitions lost meanwhile (e.g. the session timed out while the broker was away)
        # cannot be seeked; they were dropped and resume from the committed offsets when
        # they are assigned again.
        partitions = [tp for tp in partitions if tp in self.assigned]
        if not partitions:
            return
        tps = [TopicPartition(t, p) for t, p in partitions]
        committed = self.consumer.committed(tps, timeout=30)
        for tp in committed:
            self._drop_partition((tp.topic, tp.partition))
            if tp.offset >= 0:
                self.consumer.seek(tp)
            else:
                self.consumer.seek(TopicPartition(tp.topic, tp.partition, -2))  # OFFSET_BEGINNING
        self._rebuild(committed)

    # --- rebalance ----------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        log.info("assigned %s", _fmt(partitions))
        committed = consumer.committed(partitions, timeout=30)
        self._rebuild(committed)
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        log.info("revoked %s", _fmt(partitions))
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self.assigned.discard(key)
            self._drop_partition(key)
            with contextlib.suppress(KeyError):
                self.m.consumer_lag.remove(tp.topic, str(tp.partition))

    def _drop_partition(self, key: tuple[str, int]) -> None:
        assert self.engine is not None
        self.engine.drop(list(self.partition_series.pop(key, set())))

    def _rebuild(self, committed: list[TopicPartition]) -> None:
        """Replay up to ``rebuild_messages`` per partition before the committed offset through
        the engine: context only, nothing is emitted or counted."""
        assert self.engine is not None
        s = self.s
        starts: list[TopicPartition] = []
        ends: dict[tuple[str, int], int] = {}
        probe = self.consumer
        for tp in committed:
            if tp.offset <= 0 or s.rebuild_messages == 0:
                continue
            low, _high = probe.get_watermark_offsets(tp, timeout=10) if probe else (0, 0)
            start = max(low, tp.offset - s.rebuild_messages)
            if start < tp.offset:
                starts.append(TopicPartition(tp.topic, tp.partition, start))
                ends[(tp.topic, tp.partition)] = tp.offset
        if not starts:
            return
        t0 = time.monotonic()
        reader = Consumer(
            {
                **s.kafka_common(),
                "group.id": f"{s.consumer_group}-rebuild",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )
        history: list[Reading] = []
        try:
            reader.assign(starts)
            open_parts = set(ends)
            deadline = time.monotonic() + 300
            while open_parts and time.monotonic() < deadline:
                batch: list[Reading] = []
                for msg in reader.consume(5000, timeout=1.0):
                    key = (msg.topic(), msg.partition())
                    if msg.error() is not None:
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            open_parts.discard(key)
                        continue
                    if key not in open_parts or msg.offset() >= ends[key]:
                        open_parts.discard(key)
                        continue
                    if msg.offset() == ends[key] - 1:
                        open_parts.discard(key)
                    try:
                        r = decode_reading(msg.value(), s.max_message_bytes)
                    except ReadingError:
                        continue
                    self.partition_series.setdefault(key, set()).add(r.series_id)
                    batch.append(r)
                history.extend(batch)
        finally:
            reader.close()
        # Only each series' recent past shapes its state (window, forecast block, adaptive
        # scale, alarm run): replay the last `keep` readings per series, not the whole read-back,
        # so a takeover costs a few model rounds instead of one per block of the read-back.
        eng = self.engine
        keep = eng.model.context_length + 2 * eng.horizon + s.rebuild_scale_points
        seen: dict[str, int] = {}
        tail: list[Reading] = []
        for r in reversed(history):
            n = seen.get(r.series_id, 0)
            if n < keep:
                seen[r.series_id] = n + 1
                tail.append(r)
        tail.reverse()
        for i in range(0, len(tail), 5000):
            eng.process(tail[i : i + 5000])
        replayed = len(tail)
        log.info(
            "rebuilt state of %d partition(s) from %d readings in %.1fs",
            len(ends), replayed, time.monotonic() - t0,
        )  # fmt: skip

    # --- housekeeping -------------------------------------------------------------------------
    def _update_lag(self) -> None:
        if self.consumer is None or not self.assigned:
            return
        tps = [TopicPartition(t, p) for t, p in sorted(self.assigned)]
        try:
            positions = self.consumer.position(tps)
        except KafkaException:
            return
        for tp in positions:
            try:
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0 and tp.offset >= 0:
                self.m.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, high - tp.offset)
                )

    def _shutdown(self) -> None:
        self.stop()
        if self.consumer is not None:
            # Leave the group now so the partitions move to another replica at once.
            try:
                self.consumer.close()
            except (KafkaException, RuntimeError) as e:
                log.warning("closing the consumer: %s", e)
        if self.producer is not None:
            self.producer.flush(10)
        log.info("detector stopped after %d batches", self.batches)


def _score_record(res: Result, source: tuple[int, int]) -> bytes:
    r, sc = res.reading, res.scored
    return orjson.dumps(
        {
            "source_partition": source[0],
            "source_offset": source[1],
            "device_id": r.device_id,
            "metric_name": r.metric_name,
            "timestamp_ms": r.timestamp_ms,
            "outcome": res.outcome.value,
            "anomaly_score": sc.score if sc else 0.0,
            "is_anomaly": bool(sc and sc.alarm),
            "predicted_value": sc.predicted if sc else None,
            "lower": sc.lower if sc else None,
            "upper": sc.upper if sc else None,
            "model_version": sc.model_version if sc else None,
        }
    )


def _fmt(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions)


def _log_kafka_error(err: KafkaError) -> None:
    # librdkafka reports transient broker trouble here and retries by itself.
    level = logging.ERROR if err.fatal() else logging.WARNING
    log.log(level, "kafka: %s", err)
