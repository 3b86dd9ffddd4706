"""The device-fleet simulator: realistic sensor series with labelled anomalies.

Pure generation is separated from I/O:

* ``build_fleet`` (``iot_mlops.data.fleet``) and ``generate`` are pure and vectorised (numpy).
  A value is a deterministic function of ``(seed, device, metric, absolute step)`` where
  ``step = timestamp // interval``, so a backfill and a later live run continue exactly the
  same series, and any window equals the matching slice of a longer window.
* ``backfill_to_kafka``, ``backfill_to_parquet`` and ``live_to_kafka`` do the I/O.

Signal per series: per-device baseline, a daily cycle (86 400 s), a shorter 40-90 min cycle,
a slow multi-day drift (a long sinusoid rather than a random walk, so it needs no state and
stays bounded), and gaussian noise drawn per fixed block of steps from a counter-keyed RNG.

Anomalies are placed per series in fixed blocks of ``ANOMALY_BLOCK`` steps: each block holds
at most one event, entirely inside the block, with a small probability derived from the wanted
labelled-point rate. Every event departs from the clean signal by at least ``LABEL_SIGMAS``
noise sigmas wherever it is labelled, except ``stuck``, whose signature is a flat line (zero
variance) of at least ``STUCK_MIN_STEPS`` points rather than a level change. ``anomaly_kind``
is "" wherever ``is_anomaly`` is false, including the first (still small) part of a gradual
drift.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from iot_mlops.config import Settings
from iot_mlops.data.fleet import DAY_S, Device, MetricParams, build_fleet
from iot_mlops.data.sinks import KafkaSink, write_parquet_atomic
from iot_mlops.errors import ConfigError
from iot_mlops.events import Reading
from iot_mlops.progress import progress_bar

COLUMNS = (
    "device_id",
    "device_type",
    "metric_name",
    "metric_value",
    "timestamp",
    "is_anomaly",
    "anomaly_kind",
)
ANOMALY_KINDS = ("spike", "dip", "level_shift", "gradual_drift", "stuck", "noise_burst")
# Expected share of labelled points (about 1.5 %: enough to measure recall, rare enough that
# the training data is still mostly normal).
DEFAULT_ANOMALY_RATE = 0.015

# Steps per noise block: one RNG per (series, block) keeps any window cheap to regenerate.
NOISE_BLOCK = 1024
# Steps per anomaly block: at most one event per series and block, contained in the block.
ANOMALY_BLOCK = 240
# Wherever a value-changing anomaly is labelled it departs from normal by at least this much.
LABEL_SIGMAS = 5.0
STUCK_MIN_STEPS = 15

# Event shapes: durations in steps, magnitudes in noise sigmas (all clearly >= LABEL_SIGMAS).
_DUR = {
    "spike": (1, 1),
    "dip": (1, 1),
    "level_shift": (10, 60),
    "gradual_drift": (30, 120),
    "stuck": (STUCK_MIN_STEPS, 60),
    "noise_burst": (5, 30),
}
_MAG = {
    "spike": (6.0, 12.0),
    "dip": (6.0, 12.0),
    "level_shift": (6.0, 10.0),
    "gradual_drift": (10.0, 16.0),  # peak of the ramp
    "stuck": (0.0, 0.0),
    "noise_burst": (6.0, 10.0),  # per point, random sign
}


def _mean_labelled_steps() -> float:
    """Expected labelled points per event (kinds equally likely), to turn a point rate into an
    event probability per block. A drift is labelled once its ramp passes LABEL_SIGMAS."""
    lo, hi = _MAG["gradual_drift"]
    drift_share = 1 - LABEL_SIGMAS * np.log(hi / lo) / (hi - lo)  # E[1 - L/P], P ~ U(lo, hi)
    total = 0.0
    for kind in ANOMALY_KINDS:
        mean = (_DUR[kind][0] + _DUR[kind][1]) / 2
        total += mean * drift_share if kind == "gradual_drift" else mean
    return total / len(ANOMALY_KINDS)


_MEAN_LABELLED = _mean_labelled_steps()


def _series(fleet: list[Device]) -> list[tuple[Device, MetricParams]]:
    """All series in output order: by device_id, then metric_name."""
    pairs = [(d, m) for d in fleet for m in d.metrics]
    return sorted(pairs, key=lambda p: (p[0].device_id, p[1].name))


def _cycle(t_s: np.ndarray, period_s: int, phase: float) -> np.ndarray:
    # Integer modulo first: sin of a 1.8e9-second argument would lose precision.
    return np.sin(2 * np.pi * (t_s % period_s) / period_s + phase)


def _noise(seed: int, dev: Device, m: MetricParams, first: int, n: int) -> np.ndarray:
    b0, b1 = first // NOISE_BLOCK, (first + n - 1) // NOISE_BLOCK
    blocks = [
        np.random.default_rng([seed, 1, dev.index, m.index, b]).standard_normal(NOISE_BLOCK)
        for b in range(b0, b1 + 1)
    ]
    off = first - b0 * NOISE_BLOCK
    return np.concatenate(blocks)[off : off + n]


def _clean(
    seed: int, dev: Device, m: MetricParams, first: int, n: int, interval_s: int
) -> np.ndarray:
    t_s = np.arange(first, first + n, dtype=np.int64) * interval_s
    return (
        m.base
        + m.daily_amp * _cycle(t_s, DAY_S, m.daily_phase)
        + m.short_amp * _cycle(t_s, m.short_period_s, m.short_phase)
        + m.slow_amp * _cycle(t_s, m.slow_period_s, m.slow_phase)
        + m.sigma * _noise(seed, dev, m, first, n)
    )


def _inject(
    values: np.ndarray,
    kinds: np.ndarray,
    seed: int,
    dev: Device,
    m: MetricParams,
    first_block: int,
    event_p: float,
) -> None:
    """Apply this series' events in place over whole anomaly blocks starting at
    ``first_block``; ``kinds`` gets the kind index + 1 where labelled (0 = normal)."""
    n_blocks = len(values) // ANOMALY_BLOCK
    for j in range(n_blocks):
        rng = np.random.default_rng([seed, 2, dev.index, m.index, first_block + j])
        # Always draw in the same order, so the rate changes which blocks hold an event but
        # never what an event looks like.
        u, kind_u, dur_u, pos_u, mag_u, sign_u = rng.random(6)
        if u >= event_p:
            continue
        k = int(kind_u * len(ANOMALY_KINDS))
        kind = ANOMALY_KINDS[k]
        lo, hi = _DUR[kind]
        dur = lo + int(dur_u * (hi - lo + 1))
        # Start >= 1 inside the block: a stuck sensor repeats the reading just before it.
        start = j * ANOMALY_BLOCK + 1 + int(pos_u * (ANOMALY_BLOCK - dur))
        end = start + dur
        mlo, mhi = _MAG[kind]
        mag = (mlo + mag_u * (mhi - mlo)) * m.sigma
        sign = 1.0 if sign_u < 0.5 else -1.0
        seg = slice(start, end)
        label = np.ones(dur, dtype=bool)
        if kind == "spike":
            values[seg] += mag
        elif kind == "dip":
            values[seg] -= mag
        elif kind == "level_shift":
            values[seg] += sign * mag
        elif kind == "gradual_drift":
            ramp = mag * np.arange(1, dur + 1) / dur
            values[seg] += sign * ramp
            label = ramp >= LABEL_SIGMAS * m.sigma  # only once it has really departed
        elif kind == "stuck":
            values[seg] = values[start - 1]
        elif kind == "noise_burst":
            size = mlo + rng.random(dur) * (mhi - mlo)
            signs = np.where(rng.random(dur) < 0.5, -1.0, 1.0)
            values[seg] += signs * size * m.sigma
        kinds[seg][label] = k + 1


def generate(
    fleet: list[Device],
    start_ms: int,
    n_steps: int,
    interval_s: int,
    seed: int,
    *,
    anomaly_rate: float = DEFAULT_ANOMALY_RATE,
    clean: bool = False,
) -> pd.DataFrame:
    """Readings of every series for ``n_steps`` steps from ``start_ms`` (floored to the
    interval grid), sorted by timestamp, device_id, metric_name.

    ``anomaly_rate`` is the expected share of labelled points; ``clean=True`` gives the same
    series without any anomaly (same noise), which is what the labels are checked against."""
    if interval_s < 1:
        raise ConfigError(f"interval must be >= 1 s, got {interval_s}")
    if not 0 <= anomaly_rate < 0.5:
        raise ConfigError(f"anomaly rate must be in [0, 0.5), got {anomaly_rate}")
    if start_ms < 0:
        raise ConfigError("start must not be before 1970-01-01")
    first = start_ms // (interval_s * 1000)
    n = max(int(n_steps), 0)
    series = _series(fleet)
    # Work on whole anomaly blocks around the window so an event cut by the window edge
    # looks exactly as it does in any other window.
    ext_first = (first // ANOMALY_BLOCK) * ANOMALY_BLOCK
    ext_n = -(-(first + n - ext_first) // ANOMALY_BLOCK) * ANOMALY_BLOCK
    off = first - ext_first
    event_p = min(1.0, anomaly_rate * ANOMALY_BLOCK / _MEAN_LABELLED)

    n_series = len(series)
    values = np.empty((n, n_series), dtype=np.float64)
    kinds = np.zeros((n, n_series), dtype=np.int8)
    if n:
        for s, (dev, m) in enumerate(series):
            v = _clean(seed, dev, m, ext_first, ext_n, interval_s)
            kk = np.zeros(ext_n, dtype=np.int8)
            if not clean and event_p > 0:
                _inject(v, kk, seed, dev, m, ext_first // ANOMALY_BLOCK, event_p)
            values[:, s] = v[off : off + n]
            kinds[:, s] = kk[off : off + n]

    ts_ms = (np.arange(first, first + n, dtype=np.int64) * interval_s * 1000).repeat(n_series)
    kind_names = np.array(("", *ANOMALY_KINDS), dtype=object)
    flat_kinds = kinds.ravel()
    return pd.DataFrame(
        {
            "device_id": np.tile(np.array([d.device_id for d, _ in series], dtype=object), n),
            "device_type": np.tile(np.array([d.device_type for d, _ in series], dtype=object), n),
            "metric_name": np.tile(np.array([m.name for _, m in series], dtype=object), n),
            "metric_value": values.ravel(),
            "timestamp": pd.Series(ts_ms.astype("datetime64[ms]")).dt.tz_localize("UTC"),
            "is_anomaly": flat_kinds > 0,
            "anomaly_kind": kind_names[flat_kinds],
        }
    )


def timestamps_ms(df: pd.DataFrame) -> np.ndarray:
    """The (tz-aware) ``timestamp`` column as UTC epoch milliseconds, whatever its unit."""
    return df["timestamp"].dt.as_unit("ms").astype("int64").to_numpy()


def readings(df: pd.DataFrame) -> Iterator[Reading]:
    """The rows of a ``generate`` frame as ``Reading`` objects, in frame order."""
    labels = df["is_anomaly"].to_numpy(dtype=bool) if "is_anomaly" in df else None
    cols = zip(
        df["device_id"].to_numpy(),
        df["device_type"].to_numpy(),
        df["metric_name"].to_numpy(),
        df["metric_value"].to_numpy(dtype=np.float64).tolist(),
        timestamps_ms(df).tolist(),
        strict=True,
    )
    for i, (dev, dtype, metric, value, ts) in enumerate(cols):
        label = None if labels is None else bool(labels[i])
        yield Reading(dev, dtype, metric, value, ts, label)


# --------------------------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------------------------


@dataclass
class SimulationReport:
    mode: str  # "backfill" or "live"
    destination: str
    devices: int = 0
    series: int = 0
    rows: int = 0
    anomalies: Counter[str] = field(default_factory=Counter)  # labelled points by kind
    delivered: int = 0
    failed: int = 0
    first_error: str | None = None
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None
    interrupted: bool = False

    @property
    def labelled(self) -> int:
        return sum(self.anomalies.values())

    def add(self, df: pd.DataFrame) -> None:
        if df.empty:
            return
        self.rows += len(df)
        kinds = df.loc[df["is_anomaly"], "anomaly_kind"].value_counts()
        self.anomalies.update({str(k): int(v) for k, v in kinds.items()})
        ts = timestamps_ms(df)
        lo, hi = int(ts.min()), int(ts.max())
        self.first_ts_ms = lo if self.first_ts_ms is None else min(self.first_ts_ms, lo)
        self.last_ts_ms = hi if self.last_ts_ms is None else max(self.last_ts_ms, hi)

    def render(self) -> Table:
        from iot_mlops.events import format_ts

        t = Table(title=f"simulate ({self.mode}{', interrupted' if self.interrupted else ''})")
        t.add_column("item")
        t.add_column("value", justify="right")
        t.add_row("destination", self.destination)
        t.add_row("devices / series", f"{self.devices} / {self.series}")
        if self.first_ts_ms is not None and self.last_ts_ms is not None:
            t.add_row("first reading", format_ts(self.first_ts_ms))
            t.add_row("last reading", format_ts(self.last_ts_ms))
        t.add_row("readings", f"{self.rows:,}")
        share = self.labelled / self.rows if self.rows else 0.0
        t.add_row("labelled anomalies", f"{self.labelled:,} ({share:.2%})")
        for kind in ANOMALY_KINDS:
            t.add_row(f"  {kind}", f"{self.anomalies.get(kind, 0):,}")
        if self.mode != "parquet":
            t.add_row("delivered", f"{self.delivered:,}")
            t.add_row("failed", f"[red]{self.failed:,}[/]" if self.failed else "0")
            if self.first_error:
                t.add_row("first error", self.first_error)
        return t


def floor_ms(ts_ms: int, interval_s: int) -> int:
    step = interval_s * 1000
    return ts_ms // step * step


def now_floored_ms(interval_s: int) -> int:
    return floor_ms(time.time_ns() // 1_000_000, interval_s)


def _progress(console: Console | None, enabled: bool) -> Progress:
    return progress_bar(console, enabled=enabled)


def _backfill_window(end_ms: int | None, hours: float, interval_s: int) -> tuple[int, int]:
    if hours <= 0:
        raise ConfigError(f"--hours must be positive, got {hours}")
    end = floor_ms(end_ms if end_ms is not None else now_floored_ms(interval_s), interval_s)
    n_steps = int(hours * 3600 // interval_s)
    if n_steps < 1:
        raise ConfigError(f"{hours} h is shorter than one interval of {interval_s} s")
    return end - n_steps * interval_s * 1000, n_steps


# Backfill generates this many steps at a time, to bound memory for long histories.
_CHUNK_STEPS = 1440


def _chunks(
    fleet: list[Device],
    start_ms: int,
    n_steps: int,
    interval_s: int,
    seed: int,
    anomaly_rate: float,
) -> Iterator[pd.DataFrame]:
    for k in range(0, n_steps, _CHUNK_STEPS):
        yield generate(
            fleet,
            start_ms + k * interval_s * 1000,
            min(_CHUNK_STEPS, n_steps - k),
            interval_s,
            seed,
            anomaly_rate=anomaly_rate,
        )


def backfill_to_parquet(
    settings: Settings,
    path: Path,
    hours: float,
    end_ms: int | None = None,
    anomaly_rate: float = DEFAULT_ANOMALY_RATE,
) -> SimulationReport:
    """``hours`` of history ending at ``end_ms`` (exclusive; default: now floored to the
    interval), written straight to a parquet file."""
    interval = settings.sim_interval_s
    start, n_steps = _backfill_window(end_ms, hours, interval)
    fleet = build_fleet(settings.sim_seed, settings.sim_devices)
    df = generate(fleet, start, n_steps, interval, settings.sim_seed, anomaly_rate=anomaly_rate)
    report = SimulationReport("parquet", str(path), len(fleet), len(_series(fleet)))
    report.add(df)
    write_parquet_atomic(df, path)
    return report


def backfill_to_kafka(
    settings: Settings,
    hours: float,
    *,
    end_ms: int | None = None,
    anomaly_rate: float = DEFAULT_ANOMALY_RATE,
    progress: bool = True,
    console: Console | None = None,
) -> SimulationReport:
    """``hours`` of history ending at ``end_ms`` (exclusive), produced as fast as possible."""
    interval = settings.sim_interval_s
    start, n_steps = _backfill_window(end_ms, hours, interval)
    fleet = build_fleet(settings.sim_seed, settings.sim_devices)
    n_series = len(_series(fleet))
    report = SimulationReport("backfill", f"kafka {settings.input_topic}", len(fleet), n_series)
    sink = KafkaSink(settings, settings.input_topic, report)
    try:
        with _progress(console, progress) as bar:
            task = bar.add_task("backfill", total=n_steps * n_series)
            for df in _chunks(fleet, start, n_steps, interval, settings.sim_seed, anomaly_rate):
                for i, r in enumerate(readings(df)):
                    sink.send(r)
                    if i % 1000 == 0:
                        sink.poll()
                report.add(df)
                bar.advance(task, len(df))
    finally:
        # Also on Ctrl-C: what was produced gets delivered (and counted) before we exit.
        sink.flush()
    return report


def live_to_kafka(
    settings: Settings,
    rate: float | None = None,
    duration_s: float | None = None,
    start_ms: int | None = None,
    anomaly_rate: float = DEFAULT_ANOMALY_RATE,
    progress: bool = True,
    console: Console | None = None,
) -> SimulationReport:
    """Produce readings paced at ``rate`` readings/s until ``duration_s`` (wall seconds) or
    Ctrl-C/SIGTERM, starting at ``start_ms`` (default now floored to the interval).

    The simulated clock advances one interval per fleet round (one reading of every series), so
    it keeps wall time only at the fleet's natural rate (series / interval, the default); a
    higher rate runs the simulated time faster than the wall clock."""
    interval = settings.sim_interval_s
    fleet = build_fleet(settings.sim_seed, settings.sim_devices)
    n_series = len(_series(fleet))
    rate = n_series / interval if rate is None else rate
    if rate <= 0:
        raise ConfigError(f"--rate must be positive, got {rate}")
    if duration_s is not None and duration_s <= 0:
        raise ConfigError(f"--duration must be positive, got {duration_s}")
    start = floor_ms(start_ms if start_ms is not None else now_floored_ms(interval), interval)
    report = SimulationReport(
        "live", f"kafka {settings.input_topic} at {rate:g} readings/s", len(fleet), n_series
    )
    sink = KafkaSink(settings, settings.input_topic, report)
    # Rounds generated at a time: cheap, and the pacing loop below is per reading anyway.
    rounds = max(1, min(_CHUNK_STEPS, int(rate * 10 / n_series) + 1))
    total = int(rate * duration_s) if duration_s else None
    try:
        with _stop_on_signals() as stop, _progress(console, progress) as bar:
            pacer = _Pacer(rate, duration_s, stop)
            task = bar.add_task(f"live {rate:g}/s", total=total)
            step = 0
            while not stop.is_set():
                df = generate(
                    fleet, start + step * interval * 1000, rounds, interval, settings.sim_seed,
                    anomaly_rate=anomaly_rate,
                )  # fmt: skip
                step += rounds
                done = _send_paced(df, sink, pacer, lambda n: bar.update(task, completed=n))
                report.add(df.iloc[:done])
                bar.update(task, completed=pacer.sent)
    finally:
        sink.flush()
    report.interrupted = pacer.deadline is None or time.monotonic() < pacer.deadline
    return report


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by Ctrl-C/SIGTERM (in the main thread), the previous handlers restored on
    exit."""
    stop = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_a: stop.set())
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Pacer:
    """Paces readings at ``rate`` per second from now, for ``duration_s`` at most."""

    def __init__(self, rate: float, duration_s: float | None, stop: threading.Event) -> None:
        self.rate, self.stop = rate, stop
        self.t0 = time.monotonic()
        self.deadline = self.t0 + duration_s if duration_s else None
        self.sent = 0

    def wait_turn(self, sink: KafkaSink) -> bool:
        """Wait until the next reading is due; False once stopped (signal or duration)."""
        due = self.t0 + self.sent / self.rate
        while not self.stop.is_set():
            now = time.monotonic()
            if self.deadline is not None and now >= self.deadline:
                self.stop.set()
            elif due > now:
                sink.poll()
                # Short sleeps: a signal only sets a flag, so we re-check often.
                time.sleep(min(due - now, 0.1))
                continue
            break
        return not self.stop.is_set()


def _send_paced(
    df: pd.DataFrame, sink: KafkaSink, pacer: _Pacer, on_progress: Callable[[int], object]
) -> int:
    """Send the frame's readings at the pacer's rate; returns how many were sent."""
    done = 0
    for r in readings(df):
        if not pacer.wait_turn(sink):
            break
        sink.send(r)
        pacer.sent += 1
        done += 1
        if pacer.sent % 100 == 0:
            sink.poll()
            on_progress(pacer.sent)
    return done
