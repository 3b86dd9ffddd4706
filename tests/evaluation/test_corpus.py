"""Labelled evaluation corpora: deterministic, exact row budget, the promised irregularities,
labels that point at real rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iot_mlops.data.simulate import ANOMALY_KINDS, build_fleet, generate
from iot_mlops.errors import ConfigError
from iot_mlops.evaluation.corpus import (
    ALL_KINDS,
    COUNTER_KINDS,
    FIRST_ONSET,
    HARD_KINDS,
    IRREGULARITIES,
    KINDS,
    PERSISTENT_KINDS,
    SIM_START_MS,
    CorpusInfo,
    generate_corpus,
    simulator_corpus,
)
from iot_mlops.evaluation.corpus.signal import _Anomaly, _inject
from iot_mlops.evaluation.score_report import score_corpus
from iot_mlops.evaluation.scores import load_labels

pytestmark = pytest.mark.unit

SMALL = {"n_series": 14, "total_rows": 30_000, "seed": 3, "min_rows": 1000, "max_rows": 4000}
HARD = {"n_series": 16, "total_rows": 60_000, "seed": 3, "max_rows": 8000, "profile": "hard"}
# sha256 of the SMALL corpus' files, computed on the code before the hard profile existed:
# docs quote figures on standard corpora, so the default profile must not move a byte.
SMALL_SHA256 = {
    "labels.json": "3c26c66e618ba29de0575d47c50167ba25006dc0f506c66d20a2290e2fc0ef2a",
    "data/15min/series_007.csv": "3bc5e72a0b2593f16932883e1b6e2fdba2c80a1c81bc5f100e56c76270081185",
}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> CorpusInfo:
    return generate_corpus(tmp_path_factory.mktemp("small"), **SMALL)


@pytest.fixture(scope="module")
def hard(tmp_path_factory: pytest.TempPathFactory) -> CorpusInfo:
    return generate_corpus(tmp_path_factory.mktemp("hard"), **HARD)


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


def check_windows(info: CorpusInfo, allowed: tuple[str, ...]) -> set[str]:
    """Every window a clean block of real rows after the probation, and scorable: flagging
    each window's first row is a perfect detector. Returns the kinds seen."""
    labels = load_labels(info.labels_path)  # valid for the scorer: no overlaps, start <= end
    files = {p.relative_to(info.data_dir).as_posix() for p in info.data_dir.rglob("*.csv")}
    assert set(labels) == files
    kinds = set()
    results = {}
    for rel, windows in labels.items():
        df = read(info, rel)
        ts, n = df["ts"], len(df)
        df["is_anomaly"] = False
        for w in windows:
            assert ts.min() <= w.start <= w.end <= ts.max()
            rows = np.flatnonzero(((ts >= w.start) & (ts <= w.end)).to_numpy())
            # A clean contiguous block of rows, after the probation, inside the series.
            assert len(rows) >= 2 and np.all(np.diff(rows) == 1)
            assert rows[0] >= int(FIRST_ONSET * n) > int(0.15 * n)
            assert w.kind in allowed
            kinds.add(w.kind)
            df.loc[int(np.argmax((ts >= w.start).to_numpy())), "is_anomaly"] = True
        results[rel] = df
    rep = score_corpus(results, labels)
    assert all(v == pytest.approx(100.0) for v in rep.scores.values())
    assert rep.to_dict()["totals"]["skipped_windows"] == 0
    return kinds


def test_labels_reference_real_files_and_rows(small: CorpusInfo) -> None:
    assert check_windows(small, KINDS) == set(KINDS)


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


# --------------------------------------------------------------------------------------------
# The hard profile
# --------------------------------------------------------------------------------------------


def test_standard_profile_is_unchanged(small: CorpusInfo) -> None:
    root = small.labels_path.parent
    for rel, digest in SMALL_SHA256.items():
        assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest, rel
    params = json.loads((root / "manifest.json").read_text())["params"]
    assert params["profile"] == "standard"


def test_unknown_profile_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="profile"):
        generate_corpus(tmp_path, **{**SMALL, "profile": "harder"})
    assert not any(tmp_path.iterdir())  # refused before writing anything


def test_hard_profile_is_deterministic(hard: CorpusInfo, tmp_path: Path) -> None:
    again = generate_corpus(tmp_path / "again", **HARD)
    assert tree(hard.data_dir) == tree(again.data_dir)
    assert hard.labels_path.read_bytes() == again.labels_path.read_bytes()
    params = json.loads((hard.labels_path.parent / "manifest.json").read_text())["params"]
    assert params["profile"] == "hard"
    std = generate_corpus(tmp_path / "std", **{**HARD, "profile": "standard"})
    assert tree(std.data_dir) != tree(hard.data_dir)


def test_hard_profile_kinds_and_windows(hard: CorpusInfo) -> None:
    kinds = check_windows(hard, ALL_KINDS)
    assert kinds == set(ALL_KINDS)
    assert {"amplitude_change", "season_level_shift", "rate_change"} <= PERSISTENT_KINDS
    for s in hard.series:  # counters draw only counter kinds, measurements never do
        pool = COUNTER_KINDS if any(f.startswith("counter(") for f in s.features) else HARD_KINDS
        assert {w.kind for w in s.windows} <= set(pool), s.relpath
    # Mostly at the intervals where days and weeks matter, every measurement seasonal.
    assert sum(s.interval_s >= 60 for s in hard.series) >= 0.6 * len(hard.series)
    measured = [s for s in hard.series if not any(f.startswith("counter(") for f in s.features)]
    assert all(any(f.startswith("season(") for f in s.features) for s in measured)
    assert any("season(86400s" in f for s in hard.series for f in s.features)
    assert any(f.startswith("weekly(") for s in hard.series for f in s.features)


def test_hard_counters_are_bursty_non_negative_integers(hard: CorpusInfo) -> None:
    counters = [s for s in hard.series if any(f.startswith("counter(") for f in s.features)]
    assert len(counters) == 4  # series 1, 5, 9, 13 of 16
    for s in counters:
        text = pd.read_csv(hard.data_dir / s.relpath, dtype=str)["value"]
        assert text.str.fullmatch(r"\d+").all(), s.relpath  # written as integers, none < 0
        v = text.astype(np.int64).to_numpy()
        # Heavy-tailed: bursts put the top percent far above the typical count.
        assert np.quantile(v, 0.99) >= 5 * max(float(np.median(v)), 1.0), s.relpath


def hour_profile_ptp(df: pd.DataFrame, lo: pd.Timestamp, hi: pd.Timestamp) -> tuple[float, int]:
    """Peak-to-peak of the mean hour-of-day profile between ``lo`` and ``hi`` (noise averages
    out over the days), and how many days that spans."""
    part = df[(df["ts"] > lo) & (df["ts"] < hi)]
    prof = part.groupby(part["ts"].dt.hour)["value"].mean()
    return float(np.ptp(prof.to_numpy())), (part["ts"].max() - part["ts"].min()).days


def test_amplitude_change_changes_the_daily_amplitude(hard: CorpusInfo) -> None:
    ratios = []
    for s in hard.series:
        kinds = [w.kind for w in s.windows]
        if "amplitude_change" not in kinds or not any("season(86400s" in f for f in s.features):
            continue
        df = read(hard, s.relpath)
        j = kinds.index("amplitude_change")
        # Between the neighbouring windows, so no other anomaly is in either stretch.
        lo = pd.Timestamp(s.windows[j - 1].end) if j else df["ts"].min() - pd.Timedelta(1, "s")
        last = df["ts"].max() + pd.Timedelta(1, "s")
        hi = pd.Timestamp(s.windows[j + 1].start) if j + 1 < len(kinds) else last
        before, days_b = hour_profile_ptp(df, lo, pd.Timestamp(s.windows[j].start))
        after, days_a = hour_profile_ptp(df, pd.Timestamp(s.windows[j].end), hi)
        if min(days_b, days_a) >= 3:
            ratios.append(after / before)
    # This corpus has one of each direction (x2.5-4 and x0.1-0.3).
    assert len(ratios) == 2
    assert max(ratios) > 2.0 and min(ratios) < 0.4


def test_missing_stretch_is_a_gap_outside_the_windows(hard: CorpusInfo) -> None:
    stretched = [s for s in hard.series if "missing_stretch" in s.features]
    assert stretched
    for s in stretched:
        ts = read(hard, s.relpath)["ts"]
        d = ts.diff().dt.total_seconds().to_numpy()
        big = np.flatnonzero(d >= 0.02 * s.rows * s.interval_s)  # row after each long gap
        # At least one outage of >= 2 % of the rows' time lies between windows, not in one.
        outside = [
            k
            for k in big
            if all(
                ts[k] <= pd.Timestamp(w.start) or ts[k - 1] >= pd.Timestamp(w.end)
                for w in s.windows
            )
        ]
        assert outside, s.relpath


def test_the_simulator_corpus_regrouped_as_device_files(tmp_path: Path) -> None:
    """One file per device, a column per metric, labelled where any of its series is; read by
    evaluate's multi-sensor loader with --label-column."""
    from iot_mlops.evaluation.corpus.devices import LABEL_COLUMN, device_files
    from iot_mlops.evaluation.datasets import ReadOptions, load_corpus

    info = simulator_corpus(tmp_path / "sim", n_devices=2, n_steps=500, seed=5)
    paths = device_files(info.data_dir, info.labels_path, tmp_path / "dev")
    labels = json.loads(info.labels_path.read_text())
    assert [p.stem for p in paths] == sorted(p.name for p in info.data_dir.iterdir())
    for p in paths:
        df = pd.read_csv(p)
        metrics = sorted(f.stem for f in (info.data_dir / p.stem).glob("*.csv"))
        assert list(df.columns) == ["timestamp", *metrics, LABEL_COLUMN] and len(df) == 500
        ts = pd.to_datetime(df["timestamp"], utc=True)
        union = np.zeros(len(df), dtype=bool)
        for m in metrics:
            for w in labels[f"{p.stem}/{m}.csv"]:
                union |= (
                    (ts >= pd.Timestamp(w["start"])) & (ts <= pd.Timestamp(w["end"]))
                ).to_numpy()
        assert (df[LABEL_COLUMN].to_numpy() == union).all()
    assert any(pd.read_csv(p)[LABEL_COLUMN].any() for p in paths)
    loaded = load_corpus(tmp_path / "dev", ReadOptions(label_column=LABEL_COLUMN))
    assert [x.m for x in loaded] == [
        len(list((info.data_dir / p.stem).glob("*.csv"))) for p in paths
    ]
