"""Memory per series of the scoring engine: active, and what is left once expired.

Builds an `Engine` with the detector's settings (context 256, horizon 12, every channel,
liveness on), feeds N series R readings each on a 1-minute grid through a numpy last-value
stand-in forecaster (no AutoGluon: the model's own memory is not per series), and measures
with tracemalloc the bytes the engine's state holds per active series; then the log clock is
moved past the expiry and the sweep drops them all, and what remains is measured per expired
series. Writes bench/results/state-<N>x<R>-<time>.json.

Scoring runs ~0.1-0.3 ms per reading (slower traced), so feeding 10,000 series x 300 readings
takes long: by default 200 series are fed untraced and their states are cloned (pickled and
loaded: fresh objects of the same shape) into N series, which is what is measured;
``--templates 0`` feeds every series under tracemalloc instead (checks the clone method).

    python bench/bench_state.py --series 10000 --readings 300
    python bench/bench_state.py --series 1000 --readings 300 --templates 0   # all fed
    python bench/bench_state.py --series 1000 --readings 2300   # channel windows full

Channels' tail windows fill up to IOT_MLOPS_TAIL_WINDOW (2,000) values each, so a series'
state grows with its readings until then; run with --readings above 2,000 to see a long-lived
series.
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from iot_mlops.config import Settings
from iot_mlops.events import Reading
from iot_mlops.model.batch import ContextBatch, ForecastBatch
from iot_mlops.scoring.calibrate import Calibration
from iot_mlops.scoring.engine import Engine
from iot_mlops.scoring.liveness import LivenessConfig, Silence
from iot_mlops.scoring.rules import engine_options

STEP_MS = 60_000
T0 = 1_795_665_600_000
RESULTS = Path(__file__).parent / "results"


class LastValue:
    """Each series' last finite value, a ±1 interval; vectorised over the batch."""

    version = "bench"
    freq = "min"
    calibration = Calibration(threshold=1.0)

    def __init__(self, prediction_length: int, context_length: int) -> None:
        self.prediction_length = prediction_length
        self.context_length = context_length

    def forecast(self, context: ContextBatch) -> ForecastBatch:
        v = context.values
        finite = np.isfinite(v)
        idx = np.where(finite.any(axis=1), v.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1), 0)
        last = np.nan_to_num(v[np.arange(len(v)), idx], nan=0.0)
        mean = np.repeat(last[:, None], self.prediction_length, axis=1)
        quantiles = {0.01: mean - 1, 0.05: mean - 0.8, 0.5: mean, 0.95: mean + 0.8, 0.99: mean + 1}
        return ForecastBatch(
            context.ids, context.last_ms + context.step_ms, context.step_ms, mean, quantiles
        )


def feed(engine: Engine, n_series: int, n_readings: int, seed: int) -> None:
    """Step by step, every series at once (one batch per step), on one partition's clock."""
    rng = np.random.default_rng(seed)
    devices = [f"dev-{i:06d}" for i in range(n_series)]
    level = rng.normal(50, 10, n_series)
    for t in range(n_readings):
        values = (level + rng.normal(0, 1, n_series)).tolist()
        ts = T0 + t * STEP_MS
        batch = [
            Reading(d, "pump", "temperature", v, ts) for d, v in zip(devices, values, strict=True)
        ]
        engine.process(batch, times=[(0, ts)] * n_series)
        engine.sweep()


def new_engine(s: Settings) -> Engine:
    model = LastValue(s.prediction_length, s.context_length)
    return Engine(
        model, min_history=s.min_history,
        liveness=LivenessConfig(s.silent_after_s, s.expire_after_s), **engine_options(s),
    )  # fmt: skip


def clone_into(engine: Engine, template: Engine, n_series: int) -> None:
    """``n_series`` states rebuilt from the fed template's by pickling: fresh objects of the
    same shape (every float its own object, as in a live state), with distinct ids."""
    blobs = [(pickle.dumps(st), pickle.dumps(template.devices.get(st.device_id)))
             for st in template.series.values()]  # fmt: skip
    engine.clocks.update(template.clocks)
    for i in range(n_series):
        st_blob, dev_blob = blobs[i % len(blobs)]
        st = pickle.loads(st_blob)
        st.device_id = st.key = f"clone-{i:07d}"
        engine.series[f"{st.key}/temperature"] = st
        engine._device_series[st.device_id] = 1
        dev = pickle.loads(dev_blob)
        if dev is not None:
            dev.device_id = st.device_id
            engine.devices[st.device_id] = dev


def measure(n_series: int, n_readings: int, templates: int) -> dict[str, float | int]:
    """Fed: every series fed under tracemalloc (slow: the scoring runs traced). Cloned: feed
    ``templates`` series untraced, then measure ``n_series`` copies of their states."""
    s = Settings()
    t0 = time.perf_counter()
    template = None
    if templates:
        template = new_engine(s)
        feed(template, templates, n_readings, seed=1)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    engine = new_engine(s)
    if template is not None:
        clone_into(engine, template, n_series)
        del template
    else:
        feed(engine, n_series, n_readings, seed=1)
    gc.collect()
    active = tracemalloc.get_traced_memory()[0] - base
    # One reading of another series far past the expiry moves the partition's clock on.
    late = T0 + (n_readings + 24 * 60) * STEP_MS
    engine.process([Reading("clock", "pump", "temperature", 1.0, late)], times=[(0, late)])
    expired = sum(1 for ev in engine.sweep() if ev.kind is Silence.EXPIRED)
    gc.collect()
    left = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return {
        "series": n_series,
        "readings_per_series": n_readings,
        "method": f"cloned from {templates} fed series" if templates else "fed, traced",
        "tail_window": s.tail_window,
        "context_length": s.context_length,
        "bytes_per_active_series": round(active / n_series),
        "series_expired": expired,
        "series_held_after_expiry": len(engine.series),
        "bytes_per_expired_series": round(left / n_series),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=1000, help="1000, 10000 or 100000")
    ap.add_argument("--readings", type=int, default=300, help="readings per series")
    ap.add_argument(
        "--templates", type=int, default=200,
        help="series fed untraced whose states are cloned N times (0: feed all N, traced)",
    )  # fmt: skip
    args = ap.parse_args()
    result = measure(args.series, args.readings, min(args.templates, args.series))
    result["measured_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    RESULTS.mkdir(exist_ok=True)
    stamp = result["measured_at"].replace("-", "").replace(":", "")
    path = RESULTS / f"state-{args.series}x{args.readings}-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
