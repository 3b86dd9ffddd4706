"""The corpus loader on real SKAB files (multi-sensor device files) and on the single-series
``timestamp,value`` files; the label column; SKAB's changepoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iot_mlops.errors import ConfigError
from iot_mlops.evaluation.datasets import (
    ReadOptions,
    corpus_labels,
    load_corpus,
    metric_names,
    read_series,
)
from iot_mlops.evaluation.windows import Window, changepoints, windows_from_flags

pytestmark = pytest.mark.unit

SKAB_METRICS = [
    "Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
    "Thermocouple", "Voltage", "Volume Flow RateRMS",
]  # fmt: skip
SKAB_OPTS = ReadOptions(train_rows=400, label_column="anomaly", ignore_columns=("changepoint",))


def skab_file(skab_data: Path, rel: str) -> pd.DataFrame:
    return pd.read_csv(skab_data / rel, sep=";")


def test_a_skab_file_is_one_device_with_eight_metrics(skab_data: Path) -> None:
    s = read_series(skab_data / "valve1" / "0.csv", "valve1/0.csv", 0, SKAB_OPTS)
    raw = skab_file(skab_data, "valve1/0.csv")
    assert not s.single and s.device_id == "valve1/0.csv"
    assert s.metrics == SKAB_METRICS  # "anomaly" is the label, "changepoint" ignored
    assert (s.n, s.m) == (1147, 8) and s.values.shape == (1147, 8)
    assert np.allclose(s.values, raw[SKAB_METRICS].to_numpy())
    assert s.value_text[0, 0] == "0.0265878" and s.ts_text[0] == "2020-03-09 10:14:33"
    assert s.probation_rows == 400
    assert s.step_ns == pytest.approx(1e9) and s.grid[0] == 0
    # Every row on its own second, in order (the recorder skips a second now and then).
    assert (np.diff(s.grid) >= 1).all()
    assert np.array_equal(s.labels, raw["anomaly"].to_numpy() == 1)


def test_label_column_runs_become_windows(skab_data: Path) -> None:
    [s] = [x for x in load_corpus(skab_data / "valve1", SKAB_OPTS) if x.rel == "0.csv"]
    labels = corpus_labels([s], {})
    [w] = labels["0.csv"]
    assert (w.start, w.end) == (
        pd.Timestamp("2020-03-09 10:24:33", tz="UTC"),  # row 573
        pd.Timestamp("2020-03-09 10:31:32", tz="UTC"),  # row 973, the last labelled row
    )
    # With LABELS.json too: both, merged where they overlap.
    extra = [Window(pd.Timestamp("2020-03-09 10:16:00Z"), pd.Timestamp("2020-03-09 10:16:10Z"))]
    both = corpus_labels([s], {"0.csv": extra})["0.csv"]
    assert both == [extra[0], w]


def test_windows_from_flags_by_hand() -> None:
    ts = np.array([0, 1, 2, 3, 4, 5, 6], dtype=np.int64) * 10**9
    f = np.array([1, 1, 0, 0, 1, 0, 1], dtype=bool)
    got = [(w.start.value, w.end.value) for w in windows_from_flags(ts, f)]
    assert got == [(0, 1 * 10**9), (4 * 10**9, 4 * 10**9), (6 * 10**9, 6 * 10**9)]
    assert windows_from_flags(ts, np.zeros(7, bool)) == []


@pytest.mark.parametrize("rel", ["valve1/0.csv", "other/9.csv", "valve2/1.csv", "other/14.csv"])
def test_label_transitions_are_skabs_first_and_last_changepoints(skab_data: Path, rel: str) -> None:
    """Our true changepoints (every label transition) are the first and the last of SKAB's
    ``changepoint`` column; SKAB also marks regime changes inside the anomaly, which a 0/1
    label cannot express (documented in evaluation/windows.py)."""
    s = read_series(skab_data / rel, rel, 0, SKAB_OPTS)
    raw = skab_file(skab_data, rel)
    ours = np.searchsorted(s.ts_ns, changepoints(s.ts_ns, corpus_labels([s], {})[rel]))
    theirs = np.flatnonzero(raw["changepoint"].to_numpy() == 1)
    assert ours.tolist() == [theirs[0], theirs[-1]], (ours, theirs)


def test_a_changepoint_column_gives_the_changepoints(skab_data: Path) -> None:
    opts = ReadOptions(train_rows=400, label_column="anomaly", changepoint_column="changepoint")
    s = read_series(skab_data / "valve1" / "0.csv", "valve1/0.csv", 0, opts)
    assert np.flatnonzero(s.changepoints).tolist() == [573, 630, 917, 974]
    assert s.metrics == SKAB_METRICS  # the changepoint column is not a metric


def test_a_run_to_the_end_of_the_file_has_one_changepoint(skab_data: Path) -> None:
    s = read_series(skab_data / "other" / "1.csv", "other/1.csv", 0, SKAB_OPTS)
    rows = np.searchsorted(s.ts_ns, changepoints(s.ts_ns, corpus_labels([s], {})["other/1.csv"]))
    assert rows.tolist() == [557]  # the anomaly lasts to the last row


def test_anomaly_free_file_and_a_missing_label_column(skab_data: Path) -> None:
    path = skab_data / "anomaly-free" / "anomaly-free.csv"
    s = read_series(path, "anomaly-free.csv", 0, ReadOptions(train_rows=400))
    assert s.metrics == SKAB_METRICS and s.n == 9405 and s.labels is None
    with pytest.raises(ConfigError, match="no column 'anomaly'"):
        read_series(path, "anomaly-free.csv", 0, SKAB_OPTS)


def test_single_series_files_stay_single(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("timestamp,value\n2026-01-01 00:00:00,1.5\n2026-01-01 00:01:00,n/a\n")
    s = read_series(p, "x.csv", 0, 0.5)
    assert s.single and s.metrics == ["value"] and s.values.shape == (2, 1)
    assert s.value_text[:, 0].tolist() == ["1.5", "n/a"] and np.isnan(s.values[1, 0])


def test_columns_separator_and_timestamp_rules(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    rows = "".join(f"2026-01-01 00:00:{i:02d}\t{i}\t{2 * i}\tok\t{i % 2}\n" for i in range(20))
    p.write_text("Time\ttemp\t\tstatus\tlabel\n" + rows)
    s = read_series(p, "d.csv", 0, ReadOptions(probation=0.5, label_column="LABEL"))
    # Tab sniffed, "Time" found, the unnamed numeric column named, "status" left out.
    assert s.metrics == ["temp", "Unnamed: 2"] and s.skipped_columns == ["status"]
    assert s.labels.tolist() == [bool(i % 2) for i in range(20)]
    s2 = read_series(p, "d.csv", 0, ReadOptions(probation=0.5, ignore_columns=("label",)))
    assert s2.metrics == ["temp", "Unnamed: 2"] and s2.labels is None
    with pytest.raises(ConfigError, match="no column 'when'"):
        read_series(p, "d.csv", 0, ReadOptions(timestamp_column="when"))
    q = tmp_path / "e.csv"
    q.write_text("stamp;a\n2026-01-01;1\n")
    with pytest.raises(ConfigError, match="no timestamp column"):
        read_series(q, "e.csv", 0, 0.5)
    assert read_series(q, "e.csv", 0, ReadOptions(timestamp_column="stamp")).metrics == ["a"]


def test_bad_labels_and_too_few_rows(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("timestamp,a,anomaly\n2026-01-01 00:00:00,1,0\n2026-01-01 00:00:01,2,yes\n")
    with pytest.raises(ConfigError, match="row 3 of the label column 'anomaly'"):
        read_series(p, "d.csv", 0, ReadOptions(label_column="anomaly"))
    with pytest.raises(ConfigError, match="--train-rows 2 leaves none to score"):
        read_series(p, "d.csv", 0, ReadOptions(train_rows=2, ignore_columns=("anomaly",)))


def test_metric_names_follow_the_reading_schema() -> None:
    assert metric_names(["Volume Flow RateRMS", " a\tb ", "  ", "x", "x", "é" * 300]) == [
        "Volume Flow RateRMS", "a_b", "column3", "x", "x~2", "é" * 256,
    ]  # fmt: skip
