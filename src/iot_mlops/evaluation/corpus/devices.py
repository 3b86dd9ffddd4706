"""A per-series corpus (``<device>/<metric>.csv`` + labels.json) regrouped as device files.

SKAB is the only multi-sensor labelled corpus among the real ones; the simulator's fleet
regrouped this way is a second one for device-level detection (one CSV per device: a
``timestamp`` column, one column per metric and an ``anomaly`` column that is 1 where any of
the device's series is inside a labelled window: the device is anomalous when a sensor is).
Read it with ``evaluate DIR --label-column anomaly``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from iot_mlops.errors import ConfigError
from iot_mlops.evaluation.windows import load_labels

LABEL_COLUMN = "anomaly"


def device_files(data_dir: Path, labels_path: Path, out_dir: Path) -> list[Path]:
    """Write ``out_dir/<device>.csv`` for every device folder of ``data_dir``; returns them."""
    labels = load_labels(labels_path)
    devices = sorted(p for p in Path(data_dir).iterdir() if p.is_dir())
    if not devices:
        raise ConfigError(f"{data_dir}: no <device>/<metric>.csv folders to regroup")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for dev in devices:
        frame, ts = _device_frame(dev)
        anomaly = pd.Series(False, index=frame.index)
        for metric in frame.columns:
            for start, end in labels.get(f"{dev.name}/{metric}.csv", []):
                anomaly |= (ts >= start) & (ts <= end)
        frame[LABEL_COLUMN] = anomaly.astype(int)
        path = out_dir / f"{dev.name}.csv"
        frame.to_csv(path, index_label="timestamp")
        written.append(path)
    return written


def _device_frame(dev: Path) -> tuple[pd.DataFrame, pd.Series]:
    """The device's metrics side by side on their timestamps (outer join: a metric missing at
    a time is an empty cell), and those timestamps parsed."""
    cols = {
        f.stem: pd.read_csv(f).set_index("timestamp")["value"] for f in sorted(dev.glob("*.csv"))
    }
    frame = pd.DataFrame(cols).sort_index()
    ts = pd.Series(pd.to_datetime(frame.index, utc=True), index=frame.index)
    return frame, ts
