"""Reading an evaluation corpus: every ``*.csv`` under DATA_DIR (any depth) is one device.

File layout
-----------
A file holds a timestamp column and one column per metric, e.g. SKAB's
``datetime;Accelerometer1RMS;...;Volume Flow RateRMS;anomaly;changepoint``:

* **separator** (``sep``): given, or sniffed from the header line: whichever of ``,``, ``;``
  and tab occurs most often in it (``,`` when none does);
* **timestamp column** (``timestamp_column``): given, or the first column whose name (trimmed,
  any case) is one of ``TIMESTAMP_NAMES`` in that order of preference: ``timestamp``,
  ``datetime``, ``date_time``, ``time``, ``date``, ``ts``;
* **label column** (``label_column``): optional, a 0/1 column (``0``/``1``, ``0.0``/``1.0``,
  ``true``/``false``); each maximal run of 1s becomes one labelled window (from the run's
  first to its last timestamp), merged with the windows of LABELS.json for that file;
* **changepoint column** (``changepoint_column``): optional, a 0/1 column marking the true
  changepoints of SKAB's changepoint score (default: the label transitions, see ``windows``);
* **ignored columns** (``ignore_columns``, any case): never metrics (e.g. SKAB's
  ``changepoint``); a file without such a column is fine;
* **metrics**: every other column that is numeric, i.e. at least half of its non-empty cells
  are finite numbers. Other columns are left out (listed in ``skipped_columns``).

A file whose only metric column is ``value`` is today's single-series file
(``timestamp,value``): one series named ``value``. Otherwise each metric is one series of the
device, named after its column (sanitised to the reading schema: printable, trimmed, at most
``MAX_ID_CHARS`` characters, unique). The device id is the file's path relative to DATA_DIR.

Rows are kept exactly as given (original text, original order); a value that is not a finite
number is kept too and streamed as it is (the detector dead-letters it).

Training rows: the first ``train_rows`` rows of each file when given (SKAB's protocol: 400),
else the first ``floor(probation * rows)``; they are trained on and not scored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from iot_mlops.errors import ConfigError
from iot_mlops.evaluation.grid import place_on_grid
from iot_mlops.evaluation.scores import DEFAULT_PROBATION
from iot_mlops.evaluation.windows import Window, merge_windows, windows_from_flags
from iot_mlops.events import MAX_ID_CHARS

TIMESTAMP_NAMES = ("timestamp", "datetime", "date_time", "time", "date", "ts")
SINGLE_METRIC = "value"
SEPARATORS = (",", ";", "\t")
_TRUE = {"1", "1.0", "true"}
_FALSE = {"0", "0.0", "false"}


@dataclass(frozen=True)
class ReadOptions:
    """How to read the files of a corpus (see the module docstring)."""

    probation: float = DEFAULT_PROBATION
    train_rows: int | None = None
    sep: str | None = None
    timestamp_column: str | None = None
    label_column: str | None = None
    ignore_columns: tuple[str, ...] = ()
    changepoint_column: str | None = None


@dataclass
class SeriesData:
    """One input file (one device): the original text of every row plus what the stream
    needs. ``values[:, j]`` is the series of metric ``metrics[j]``."""

    rel: str  # path relative to DATA_DIR (posix): the labels key and the output path
    device_id: str
    ts_text: np.ndarray  # object: original timestamp strings
    ts_ns: np.ndarray  # int64 UTC nanoseconds
    metrics: list[str]  # sanitised metric names (the readings' metric_name)
    value_text: np.ndarray  # object (rows, metrics): original value strings
    values: np.ndarray  # float64 (rows, metrics), NaN where not a finite number
    single: bool = True  # a timestamp,value file
    labels: np.ndarray | None = None  # bool per row, from the label column
    changepoints: np.ndarray | None = None  # bool per row, from the changepoint column
    skipped_columns: list[str] = field(default_factory=list)
    probation_rows: int = 0
    step_ns: float = 0.0
    phase_ns: float = 0.0
    grid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n(self) -> int:
        return len(self.ts_ns)

    @property
    def m(self) -> int:
        return len(self.metrics)

    def synthetic_ms(self) -> np.ndarray:
        from iot_mlops.evaluation.grid import synthetic_ms

        return synthetic_ms(self.grid)

    def train_mask(self, j: int = 0) -> np.ndarray:
        """Training rows of metric ``j`` the detector would put in its context: a finite
        value on a grid step beyond every earlier row's with a finite value of that metric
        (not a duplicate, not late)."""
        p = self.probation_rows
        finite = np.isfinite(self.values[:p, j])
        low = np.iinfo(np.int64).min
        # Dead-lettered rows never reach the detector's state, so they do not count as seen.
        g = np.where(finite, self.grid[:p], low)
        prev_max = np.maximum.accumulate(np.concatenate(([low], g[:-1])))
        return (g > prev_max) & finite


def device_id(rel: str, i: int) -> str:
    if len(rel) <= MAX_ID_CHARS and rel.strip():
        return rel
    return f"{rel[: MAX_ID_CHARS - 24]}~{i:06d}"


def metric_names(columns: Sequence[object]) -> list[str]:
    """Column names as metric names the reading schema accepts (events.py: a non-blank,
    valid Unicode string of at most MAX_ID_CHARS characters): control characters become
    ``_``, ends are trimmed, a blank name becomes ``column<k>``, repeats get ``~2``, ``~3``."""
    out: list[str] = []
    seen: set[str] = set()
    for k, c in enumerate(columns, 1):
        name = "".join(ch if ch.isprintable() else "_" for ch in str(c)).strip()
        name = name.encode("utf-8", "replace").decode("utf-8")[:MAX_ID_CHARS] or f"column{k}"
        base, i = name, 2
        while name in seen:
            name = f"{base[: MAX_ID_CHARS - 8]}~{i}"
            i += 1
        seen.add(name)
        out.append(name)
    return out


def sniff_separator(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            header = f.readline()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it: {e}") from None
    counts = [header.count(s) for s in SEPARATORS]
    return SEPARATORS[int(np.argmax(counts))] if max(counts) else ","


def _read_text(path: Path, sep: str | None) -> pd.DataFrame:
    sep = sep or sniff_separator(path)
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise ConfigError(
            f"{path}: the file is empty (expected a header such as timestamp,value)"
        ) from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise ConfigError(f"{path}: cannot read it as CSV: {str(e).splitlines()[0]}") from None
    if df.empty:
        raise ConfigError(f"{path}: the file has a header but no rows")
    return df


def _column(df: pd.DataFrame, path: Path, name: str, flag: str) -> str:
    cols = {str(c).strip().lower(): c for c in df.columns}
    if name.strip().lower() not in cols:
        raise ConfigError(
            f"{path}: no column {name!r} ({flag}; has {', '.join(map(str, df.columns))})"
        )
    return cols[name.strip().lower()]


def timestamp_column(df: pd.DataFrame, path: Path, given: str | None) -> str:
    if given:
        return _column(df, path, given, "--timestamp-column")
    cols = {str(c).strip().lower(): c for c in df.columns}
    for name in TIMESTAMP_NAMES:
        if name in cols:
            return cols[name]
    raise ConfigError(
        f"{path}: no timestamp column (looked for {', '.join(TIMESTAMP_NAMES)}; has "
        f"{', '.join(map(str, df.columns))})",
        fix="each CSV needs a timestamp column (e.g. the header timestamp,value), or name it "
        "with --timestamp-column",
    )


def parse_timestamps(text: np.ndarray, path: Path) -> np.ndarray:
    ts = pd.to_datetime(pd.Series(text), utc=True, format="ISO8601", errors="coerce")
    bad = np.flatnonzero(ts.isna().to_numpy())
    if len(bad):
        row = int(bad[0])
        raise ConfigError(
            f"{path}: row {row + 2} has an unreadable timestamp {text[row]!r}"
            + (f" ({len(bad)} such rows)" if len(bad) > 1 else ""),
            fix='use ISO 8601, e.g. "2026-01-01 00:00:00" (tz-naive means UTC)',
        )
    return ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]").view(np.int64)


def parse_labels(text: np.ndarray, path: Path, column: str) -> np.ndarray:
    low = np.char.lower(np.char.strip(text.astype(str)))
    ok = np.isin(low, list(_TRUE | _FALSE))
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        raise ConfigError(
            f"{path}: row {row + 2} of the label column {column!r} is {text[row]!r}, not 0/1"
        )
    return np.isin(low, list(_TRUE))


def _numbers(text: np.ndarray) -> np.ndarray:
    v = pd.to_numeric(pd.Series(text), errors="coerce").to_numpy(dtype=np.float64)
    v[~np.isfinite(v)] = np.nan
    return v


def _metric_columns(
    df: pd.DataFrame, excluded: set[object]
) -> tuple[list[object], list[np.ndarray], list[str]]:
    """(metric columns, their values, the skipped non-numeric columns)."""
    cols, values, skipped = [], [], []
    for c in df.columns:
        if c in excluded:
            continue
        text = df[c].to_numpy(dtype=object)
        v = _numbers(text)
        filled = int(np.count_nonzero(np.char.strip(text.astype(str)) != ""))
        if filled and np.count_nonzero(np.isfinite(v)) * 2 >= filled:
            cols.append(c)
            values.append(v)
        else:
            skipped.append(str(c))
    return cols, values, skipped


def read_series(path: Path, rel: str, index: int, opts: ReadOptions | float) -> SeriesData:
    """One CSV file (one device), every row kept as text (see the module docstring)."""
    if not isinstance(opts, ReadOptions):
        opts = ReadOptions(probation=float(opts))
    df = _read_text(path, opts.sep)
    ts_col = timestamp_column(df, path, opts.timestamp_column)
    ignored = {c.strip().lower() for c in opts.ignore_columns}
    excluded = {ts_col, *(c for c in df.columns if str(c).strip().lower() in ignored)}
    labels = None
    if opts.label_column:
        lab_col = _column(df, path, opts.label_column, "--label-column")
        excluded.add(lab_col)
        labels = parse_labels(df[lab_col].to_numpy(dtype=object), path, str(lab_col))
    cps = None
    if opts.changepoint_column:
        cp_col = _column(df, path, opts.changepoint_column, "--changepoint-column")
        excluded.add(cp_col)
        cps = parse_labels(df[cp_col].to_numpy(dtype=object), path, str(cp_col))
    others = [c for c in df.columns if c not in excluded]
    if [str(c).strip().lower() for c in others] == [SINGLE_METRIC]:
        # Today's timestamp,value file: the value column is the series, whatever it holds.
        cols, skipped = others, []
        values = [_numbers(df[others[0]].to_numpy(dtype=object))]
    else:
        cols, values, skipped = _metric_columns(df, excluded)
    if not cols:
        raise ConfigError(
            f"{path}: no numeric metric column (has {', '.join(map(str, df.columns))})",
            fix="each CSV needs a timestamp column and at least one numeric column",
        )
    single = [str(c).strip().lower() for c in cols] == [SINGLE_METRIC]
    s = SeriesData(
        rel=rel,
        device_id=device_id(rel, index),
        ts_text=df[ts_col].to_numpy(dtype=object),
        ts_ns=parse_timestamps(df[ts_col].to_numpy(dtype=object), path),
        metrics=[SINGLE_METRIC] if single else metric_names(cols),
        value_text=df[cols].to_numpy(dtype=object),
        values=np.column_stack(values),
        single=single,
        labels=labels,
        changepoints=cps,
        skipped_columns=skipped,
    )
    s.probation_rows = training_rows(s.n, opts, path)
    s.step_ns, s.phase_ns, s.grid = place_on_grid(s.ts_ns, s.probation_rows, path)
    return s


def training_rows(n: int, opts: ReadOptions, path: Path) -> int:
    if opts.train_rows is None:
        return math.floor(opts.probation * n)
    if n <= opts.train_rows:
        raise ConfigError(
            f"{path}: {n} rows, --train-rows {opts.train_rows} leaves none to score",
            fix="lower --train-rows, or leave out files that short",
        )
    return int(opts.train_rows)


def load_corpus(
    data_dir: Path, opts: ReadOptions | float, out_dir: Path | None = None
) -> list[SeriesData]:
    """Every CSV under ``data_dir`` (sorted by path), refusing an ``out_dir`` inside it."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise ConfigError(f"data directory {data_dir} does not exist")
    if not data_dir.is_dir():
        raise ConfigError(f"{data_dir} is not a directory (DATA_DIR holds the CSV files)")
    if out_dir is not None:
        o, d = Path(out_dir).resolve(), data_dir.resolve()
        if o == d or d in o.parents:
            raise ConfigError(
                f"--out {out_dir} is inside DATA_DIR {data_dir}: the results would be read as "
                "input next time",
                fix="choose an output directory outside DATA_DIR",
            )
    paths = sorted(p for p in data_dir.rglob("*") if p.suffix.lower() == ".csv" and p.is_file())
    if not paths:
        raise ConfigError(
            f"no CSV files under {data_dir}",
            fix="DATA_DIR must hold CSV files (any depth) with a timestamp and metric columns",
        )
    return [
        read_series(p, p.relative_to(data_dir).as_posix(), i, opts) for i, p in enumerate(paths)
    ]


def corpus_labels(
    series: Sequence[SeriesData], given: Mapping[str, Sequence[Window]]
) -> dict[str, list[Window]]:
    """The windows of every file: LABELS.json's plus the runs of its label column, merged."""
    out = {rel: list(w) for rel, w in given.items()}
    for s in series:
        if s.labels is not None:
            out[s.rel] = merge_windows(
                [*out.get(s.rel, []), *windows_from_flags(s.ts_ns, s.labels)]
            )
    return out
