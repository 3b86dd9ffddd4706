"""Labelled evaluation corpora: deterministic, exact row budget, the promised irregularities,
labels that point at real rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iot_mlops.data.simulate import ANOMALY_KINDS, build_fleet, generate
from iot_mlops.errors import ConfigError
from iot_mlops.evaluation.corpus import (
    FIRST_ONSET,
    IRREGULARITIES,
    KINDS,
    SIM_START_MS,
    CorpusInfo,
    _Anomaly,
    _inject,
    generate_corpus,
    simulator_corpus,
)
from iot_mlops.evaluation.score_report import score_corpus
from iot_mlops.evaluation.scores import load_labels

pytestmark = pytest.mark.unit

SMALL = {"n_series": 14, "total_rows": 30_000, "seed": 3, "min_rows": 1000, "max_rows": 4000}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> CorpusInfo:
    return generate_corpus(tmp_path_factory.mktemp("small"), **SMALL)


def read(info: CorpusInfo, rel: str) -> pd.DataFrame:
    df = pd.read_csv(info.data_dir / rel)
    df["ts"] = pd.to_datetime(df["timestamp"], utc=True, format="ISO8601")
    return df


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(small: CorpusInfo, tmp_path: Path) -> None:
    again = generate_corpus(tmp_path / "again", **SMALL)
    a, b = tree(small.data_dir), tree(again.data_dir)
    assert a == b and len(a) == SMALL["n_series"]
    assert small.labels_path.read_bytes() == again.labels_path.read_bytes()
    other = generate_corpus(tmp_path / "other", **{**SMALL, "seed": 4})
    assert tree(other.data_dir) != a


def test_row_counts_within_bounds_and_exact_total(small: CorpusInfo) -> None:
    assert small.total_rows == SMALL["total_rows"]
    for s in small.series:
        assert SMALL["min_rows"] <= s.rows <= SMALL["max_rows"]
        df = pd.read_csv(small.data_dir / s.relpath)
        assert list(df.columns) == ["timestamp", "value"]
        assert len(df) == s.rows and df["value"].notna().all()


def test_speed_corpus_shape(tmp_path: Path) -> None:
    info = generate_corpus(tmp_path / "speed", n_series=60, total_rows=400_000, seed=11)
    rows = [s.rows for s in info.series]
    assert len(rows) == 60 and sum(rows) == 400_000
    assert min(rows) >= 1000 and max(rows) <= 25_000
    assert len(list(info.data_dir.rglob("*.csv"))) == 60


@pytest.mark.parametrize(
    ("n", "total", "lo", "hi"), [(10, 5_000, 1000, 2000), (2, 10_000, 1000, 2000), (0, 0, 1, 2)]
)
def test_impossible_budgets_are_config_errors(
    tmp_path: Path, n: int, total: int, lo: int, hi: int
) -> None:
    with pytest.raises(ConfigError):
        generate_corpus(tmp_path, n, total, 1, min_rows=lo, max_rows=hi)


def test_irregularities_are_present(small: CorpusInfo) -> None:
    repeats = backward = gaps = irregular = 0
    intervals = set()
    for s in small.series:
        ts = read(small, s.relpath)["ts"]
        d = ts.diff().dt.total_seconds().to_numpy()[1:]
        repeats += int(np.any(d == 0))
        backward += int(np.any(d < 0))
        gaps += int(np.any(d > 10 * s.interval_s))
        irregular += int(np.any((d > 0) & (np.abs(d - s.interval_s) > 1e-3)))
        intervals.add(s.interval_s)
    assert repeats and backward and gaps and irregular
    assert len(intervals) >= 3
    # The manifest says which series got which irregularity; all of them are used.
    feats = {f for s in small.series for f in s.features}
    assert set(IRREGULARITIES) <= feats
    # Some files have nested paths ("any depth").
    assert any(s.relpath.count("/") >= 2 for s in small.series)


def test_labels_reference_real_files_and_rows(small: CorpusInfo) -> None:
    labels = load_labels(small.labels_path)  # valid for the scorer: no overlaps, start <= end
    files = {p.relative_to(small.data_dir).as_posix() for p in small.data_dir.rglob("*.csv")}
    assert set(labels) == files
    kinds = set()
    for rel, windows in labels.items():
        df = read(small, rel)
        ts, n = df["ts"], len(df)
        for w in windows:
            assert ts.min() <= w.start <= w.end <= ts.max()
            rows = np.flatnonzero(((ts >= w.start) & (ts <= w.end)).to_numpy())
            # A clean contiguous block of rows, after the probation, inside the series.
            assert len(rows) >= 2 and np.all(np.diff(rows) == 1)
            assert rows[0] >= int(FIRST_ONSET * n) > int(0.15 * n)
            assert w.kind in KINDS
            kinds.add(w.kind)
    assert kinds == set(KINDS)
    # End to end with the scorer: flagging each window's first row is a perfect detector.
    results = {}
    for rel, windows in labels.items():
        df = read(small, rel)
        df["is_anomaly"] = False
        for w in windows:
            df.loc[int(np.argmax((df["ts"] >= w.start).to_numpy())), "is_anomaly"] = True
        results[rel] = df
    rep = score_corpus(results, labels)
    assert all(v == pytest.approx(100.0) for v in rep.scores.values())
    assert rep.to_dict()["totals"]["skipped_windows"] == 0


def test_persistent_kinds_persist_and_transient_ones_return() -> None:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(200)
    for kind, persists in [
        ("level_shift", True),
        ("drift", True),
        ("spike", False),
        ("stuck", False),
        ("noise_burst", False),
    ]:
        x = noise.copy()
        _inject(np.random.default_rng(1), x, noise, _Anomaly(kind, 100, 120, 90, 140))
        tail_changed = not np.allclose(x[150:], noise[150:])
        assert tail_changed == persists, kind
        assert not np.allclose(x[100:121], noise[100:121]), kind
        assert np.allclose(x[:100], noise[:100]), kind
    x = noise.copy()
    _inject(np.random.default_rng(1), x, noise, _Anomaly("variance_change", 100, 100, 90, 140))
    assert np.std(x[100:]) > 2.5 * np.std(x[:100])


def test_simulator_corpus_windows_are_the_labelled_runs(tmp_path: Path) -> None:
    info = simulator_corpus(tmp_path / "sim", n_devices=2, n_steps=3000, interval_s=60, seed=5)
    fleet = build_fleet(5, 2)
    df = generate(fleet, SIM_START_MS, 3000, 60, 5)
    n_series = sum(len(d.metrics) for d in fleet)
    assert len(info.series) == n_series and info.total_rows == 3000 * n_series
    labels = json.loads(info.labels_path.read_text())
    for (dev, metric), g in df.groupby(["device_id", "metric_name"]):
        rel = f"{dev}/{metric}.csv"
        csv = pd.read_csv(info.data_dir / rel)
        assert len(csv) == 3000
        assert np.allclose(csv["value"].to_numpy(), g["metric_value"].to_numpy())
        mask = g["is_anomaly"].to_numpy()
        runs = int(np.count_nonzero(np.diff(np.concatenate(([0], mask.astype(int)))) == 1))
        assert len(labels[rel]) == runs
        ts = pd.to_datetime(csv["timestamp"], utc=True)
        for w in labels[rel]:
            inside = (ts >= pd.Timestamp(w["start"])) & (ts <= pd.Timestamp(w["end"]))
            assert mask[inside.to_numpy()].all()
            assert w["kind"] in ANOMALY_KINDS
    assert info.n_windows > 0
    padded = simulator_corpus(tmp_path / "pad", n_devices=2, n_steps=3000, seed=5, pad_after=5)
    assert 0 < padded.n_windows <= info.n_windows
