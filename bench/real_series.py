"""Real unlabelled sensor series from PyPI's ``bokeh-sampledata`` wheel, as ``evaluate`` files
(a dev-only false-alarm check: every episode on them counts as false; docs/quality.md).

* ``sensors/``: a continuous glucose monitor (glucose and its raw ``isig`` current, 5 min) and
  a buoy's sea-surface temperature (30 min);
* ``counters/``: the project's commit timestamps counted per hour and per 15 minutes (the
  last 40,000), a real bursty counter that is idle for nights and weekends.

Usage::

    .venv/bin/pip download --no-deps bokeh_sampledata -d /tmp/bokeh
    .venv/bin/python bench/real_series.py /tmp/bokeh/bokeh_sampledata-*.whl /tmp/real
    .venv/bin/iot-mlops evaluate /tmp/real/sensors --labels /tmp/real/labels.json --out OUT
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import pandas as pd

_ISO = "%Y-%m-%dT%H:%M:%SZ"


def _write(path: Path, ts: pd.Series | pd.DatetimeIndex, values: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"timestamp": pd.DatetimeIndex(ts).strftime(_ISO), "value": values}).to_csv(
        path, index=False
    )


def main(wheel: Path, out: Path) -> None:
    with zipfile.ZipFile(wheel) as z:

        def data(name: str) -> io.BytesIO:
            return io.BytesIO(z.read(f"bokeh_sampledata/_data/{name}"))

        cgm = pd.read_csv(data("CGM.csv.gz"), compression="gzip", parse_dates=["datetime"])
        sst = pd.read_csv(data("sea_surface_temperature.csv.gz"), compression="gzip")
        lines = data("commits.txt.gz")
        commits = pd.read_csv(lines, compression="gzip", header=None, names=["t"], sep="\t")
    cgm = cgm.sort_values("datetime")
    for col in ("glucose", "isig"):  # glucose holds some text ("High"): dead letters
        _write(out / "sensors" / f"{col}.csv", cgm["datetime"], cgm[col].to_numpy())
    _write(out / "sensors" / "buoy.csv", pd.to_datetime(sst.iloc[:, 0]), sst.iloc[:, 1].to_numpy())
    t = pd.to_datetime(commits["t"], format="%a, %d %b %Y %H:%M:%S %z", utc=True)
    counts = pd.Series(1, index=pd.DatetimeIndex(t)).sort_index()
    for freq, keep in (("1h", None), ("15min", 40_000)):
        c = counts.resample(freq).sum()
        c = c if keep is None else c.tail(keep)
        _write(out / "counters" / f"commits_{freq}.csv", c.index, c.to_numpy())
    (out / "labels.json").write_text(json.dumps({}))
    print(f"wrote {sorted(str(p.relative_to(out)) for p in out.rglob('*.csv'))}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
