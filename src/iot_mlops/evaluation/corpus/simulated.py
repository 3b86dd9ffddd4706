"""The project simulator's fleet written as a labelled corpus in the same format."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from iot_mlops.errors import ConfigError
from iot_mlops.evaluation.corpus.files import _write
from iot_mlops.evaluation.corpus.frame import _iso
from iot_mlops.evaluation.corpus.spec import (
    SIM_START_MS,
    CorpusInfo,
    LabelWindow,
    SeriesInfo,
)

# --------------------------------------------------------------------------------------------
# The simulator's fleet in the same format
# --------------------------------------------------------------------------------------------


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as inclusive (first, last) row indices."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


def simulator_corpus(
    out_dir: Path,
    n_devices: int = 6,
    n_steps: int = 10_000,
    interval_s: int = 60,
    seed: int = 42,
    start_ms: int = SIM_START_MS,
    pad_after: int = 0,
) -> CorpusInfo:
    """The simulator's fleet (``build_fleet(seed, n_devices)``, ``n_steps`` readings per series
    from ``start_ms``) as one CSV per series at ``<device_id>/<metric_name>.csv``.

    Windows are the maximal runs of ``is_anomaly`` rows (kind: the run's ``anomaly_kind``),
    optionally extended by ``pad_after`` rows (runs that then touch are merged)."""
    from iot_mlops.data.simulate import build_fleet, generate

    if pad_after < 0:
        raise ConfigError(f"pad_after must be >= 0, got {pad_after}")
    fleet = build_fleet(seed, n_devices)
    df = generate(fleet, start_ms, n_steps, interval_s, seed)
    frames: list[tuple[str, pd.DataFrame]] = []
    series: list[SeriesInfo] = []
    for (dev, metric), g in df.groupby(["device_id", "metric_name"], sort=True):
        ts = g["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ms]")
        mask = g["is_anomaly"].to_numpy(dtype=bool)
        kinds = g["anomaly_kind"].to_numpy(dtype=object)
        runs = _runs(mask)
        if pad_after:
            merged: list[list[int]] = []
            for a, b in runs:
                b = min(b + pad_after, len(mask) - 1)
                if merged and a <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], b)
                else:
                    merged.append([a, b])
            runs = [(a, b) for a, b in merged]
        windows = []
        for a, b in runs:
            ks = [k for k in kinds[a : b + 1] if k]
            kind = Counter(ks).most_common(1)[0][0] if ks else "unknown"
            windows.append(
                LabelWindow(str(_iso(ts[a : a + 1])[0]), str(_iso(ts[b : b + 1])[0]), kind)
            )
        rel = f"{dev}/{metric}.csv"
        frames.append(
            (rel, pd.DataFrame({"timestamp": _iso(ts), "value": g["metric_value"].to_numpy()}))
        )
        series.append(SeriesInfo(rel, len(g), interval_s, windows, ["simulator"]))
    params = {
        "n_devices": n_devices,
        "n_steps": n_steps,
        "interval_s": interval_s,
        "seed": seed,
        "start_ms": start_ms,
        "pad_after": pad_after,
    }
    return _write(out_dir, frames, series, seed, "simulator", params)
