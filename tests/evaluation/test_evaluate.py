"""``iot-mlops evaluate`` end to end on the session's real Kafka and MLflow (one small real
AutoGluon fit for the module), its grid mapping, and its bad-input handling (no services)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from cli_helpers import cli_env, isolated, run_cli

from iot_mlops.config import Settings
from iot_mlops.evaluation.corpus import generate_corpus
from iot_mlops.evaluation.pipeline import estimate_grid, load_corpus, stream_order
from iot_mlops.kafka.stack import free_port

HAND = "hand/irregular.csv"


def hand_made(path: Path) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """600 rows at 1 minute, tz-naive NAB-style timestamps, with the awkward cases: repeated
    timestamps, a backward clock jump, non-numeric values and a labelled spike."""
    n = 600
    t = pd.Timestamp("2026-03-01 00:00:00") + pd.to_timedelta(np.arange(n), unit="min")
    rng = np.random.default_rng(5)
    v = 20 + 3 * np.sin(np.arange(n) * 2 * np.pi / 60) + rng.normal(0, 0.2, n)
    v[450] += 15.0  # the labelled spike
    ts = [x.strftime("%Y-%m-%d %H:%M:%S") for x in t]
    vals = [f"{x:.3f}" for x in v]
    for i in (200, 300, 301):  # repeated timestamps: the row repeats its predecessor's time
        ts[i] = ts[i - 1]
    for i in range(350, 360):  # clock jump: ten rows five minutes behind
        ts[i] = (t[i] - pd.Timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    vals[250], vals[400] = "n/a", ""  # non-numeric: dead-lettered by the detector
    df = pd.DataFrame({"timestamp": ts, "value": vals})
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    window = [{"start": ts[448], "end": ts[470], "kind": "spike"}]
    return df, window


@pytest.fixture(scope="module")
def evaluated(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One `iot-mlops evaluate` for the module: a small generated corpus plus the hand-made
    file, through the real Kafka, detector and MLflow."""
    root = tmp_path_factory.mktemp("evaluate")
    info = generate_corpus(
        root / "corpus", n_series=4, total_rows=6000, seed=11, min_rows=1000, max_rows=2000
    )
    _, window = hand_made(info.data_dir / HAND)
    labels = json.loads(info.labels_path.read_text())
    labels[HAND] = window
    info.labels_path.write_text(json.dumps(labels))
    s = isolated(stack_settings, "eval")
    env = cli_env(s)
    out = root / "out"
    result = run_cli(
        ["evaluate", str(info.data_dir), "--labels", str(info.labels_path), "--out", str(out),
         "--time-limit", "60", "--models", "DirectTabular"],
        env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return {
        "settings": s,
        "data": info.data_dir,
        "out": out,
        "output": result.output,
        "scores": json.loads((out / "scores.json").read_text()),
    }


@pytest.mark.slow
@pytest.mark.integration
def test_every_row_in_order_with_scores(evaluated: dict) -> None:
    data, out = evaluated["data"], evaluated["out"]
    inputs = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.csv"))
    assert len(inputs) == 5
    for rel in inputs:
        src = pd.read_csv(data / rel, dtype=str, keep_default_na=False)
        res = pd.read_csv(out / rel, dtype=str, keep_default_na=False)
        cols = ["timestamp", "value", "anomaly_score", "is_anomaly", "in_episode"]
        assert list(res.columns) == cols, rel
        assert len(res) == len(src), rel
        assert res["timestamp"].tolist() == src["timestamp"].tolist(), rel
        assert res["value"].tolist() == src["value"].tolist(), rel
        score = res["anomaly_score"].astype(float)
        assert score.between(0.0, 1.0).all(), rel
        assert set(res["is_anomaly"]) <= {"true", "false"}, rel
        assert set(res["in_episode"]) <= {"true", "false"}, rel
        # An onset opens an episode: the row is in it.
        assert (res.loc[res["is_anomaly"] == "true", "in_episode"] == "true").all(), rel
    # Flags are a decision on the score (>= 0.5 at the threshold), never on an unscored row.
    hand = pd.read_csv(out / HAND, dtype=str, keep_default_na=False)
    flagged = hand["is_anomaly"] == "true"
    assert (hand.loc[flagged, "anomaly_score"].astype(float) > 0).all()


@pytest.mark.slow
@pytest.mark.integration
def test_awkward_rows_get_no_score(evaluated: dict) -> None:
    """Dead-lettered (non-numeric), duplicate and late rows stay in the output, unscored."""
    hand = pd.read_csv(evaluated["out"] / HAND, dtype=str, keep_default_na=False)
    for i in (250, 400, 200, 300, 301, *range(350, 355)):
        assert hand.loc[i, "anomaly_score"] == "0.0" and hand.loc[i, "is_anomaly"] == "false", i
    assert hand.loc[250, "value"] == "n/a" and hand.loc[400, "value"] == ""
    outcomes = evaluated["scores"]["evaluation"]["outcomes"]
    assert outcomes["dead_letter"] == 2
    assert outcomes["duplicate"] >= 4 and outcomes["late"] >= 4
    assert "missing" not in outcomes  # every valid row got a record from the detector
    assert sum(outcomes.values()) == 6600
    # The labelled spike in the hand-made file is found.
    assert (hand.loc[450:470, "is_anomaly"] == "true").any()


@pytest.mark.slow
@pytest.mark.integration
def test_scores_json(evaluated: dict) -> None:
    sc = evaluated["scores"]
    assert set(sc["scores"]) == {"standard", "reward_low_fp", "reward_low_fn"}
    assert all(v is not None and -1000 < v <= 100 for v in sc["scores"].values())
    for view in ("point", "event"):
        assert {"precision", "recall", "f1"} <= set(sc[view])
    assert sc["probation"] == 0.15 and sc["train_rows"] is None
    # SKAB's metrics and the top score are reported for every corpus.
    assert {"f1", "far", "mar", "tp", "fp", "fn", "tn"} <= set(sc["skab"]["outliers"])
    assert set(sc["skab"]["changepoints"]["scores"]) == set(sc["scores"])
    assert 0 < sc["top_score"]["share"] <= 1
    assert sc["totals"]["files"] == 5 and sc["totals"]["rows"] == 6600
    ev = sc["evaluation"]
    for k in ("rows", "files", "train_seconds", "stream_seconds", "total_seconds"):
        assert ev[k] > 0, k
    assert ev["model_name"] == evaluated["settings"].model_name + "-evaluation"
    assert ev["grid_freq"] == "1min"
    assert ev["series_steps_s"][HAND] == pytest.approx(60.0)
    assert "Window score" in evaluated["output"] and "event-wise" in evaluated["output"]


@pytest.mark.slow
@pytest.mark.integration
def test_mlflow_evaluation_run_linked_to_the_model(evaluated: dict) -> None:
    s: Settings = evaluated["settings"]
    ev = evaluated["scores"]["evaluation"]
    client = mlflow.MlflowClient(s.mlflow_tracking_uri, s.mlflow_tracking_uri)
    exp = client.get_experiment_by_name(s.experiment_name)
    runs = client.search_runs([exp.experiment_id], "tags.run_type = 'evaluation'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id == ev["evaluation_run_id"]
    assert run.data.tags["model_name"] == ev["model_name"]
    assert run.data.tags["model_version"] == ev["model_version"]
    assert run.data.tags["training_run_id"] == ev["training_run_id"]
    assert client.get_run(ev["training_run_id"]).info.experiment_id == exp.experiment_id
    m = run.data.metrics
    assert m["nab_standard"] == pytest.approx(evaluated["scores"]["scores"]["standard"])
    for k in ("point_f1", "event_f1", "event_recall", "total_seconds", "stream_seconds"):
        assert k in m, k
    assert "scores.json" in [a.path for a in client.list_artifacts(run.info.run_id)]
    # The evaluation model is served under its own name; the production name is untouched.
    mv = client.get_model_version_by_alias(ev["model_name"], s.model_alias)
    assert str(mv.version) == ev["model_version"]
    assert mv.tags.get("evaluation_run_id") == run.info.run_id
    assert client.search_model_versions(f"name='{s.model_name}'") == []


# --- the grid mapping (pure) -------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("step_s", [1, 5, 60, 900, 3600])
def test_estimate_grid_under_heavy_jitter_and_drops(step_s: int) -> None:
    rng = np.random.default_rng(step_s)
    k = np.sort(rng.choice(np.arange(6000), size=5400, replace=False))  # 10 % dropped
    t = 1_700_000_000.0 + k * step_s + rng.uniform(-0.4, 0.4, len(k)) * step_s
    ts_ns = np.round(t * 1e9).astype(np.int64)
    step, phase = estimate_grid(ts_ns, 800)  # from the first 15 % of the rows only
    assert step / 1e9 == pytest.approx(step_s, rel=1e-4)
    grid = np.rint((ts_ns - phase) / step).astype(np.int64)
    # The readings land on their own grid steps over the whole series: no drift (a wrong step
    # would misplace thousands); jitter of up to ±40 % of a step may misplace a rare few.
    assert grid[0] == 0
    assert np.mean(grid == k - k[0]) > 0.995


@pytest.mark.unit
def test_repeats_and_clock_jumps_map_to_duplicate_and_late_steps(tmp_path: Path) -> None:
    df, _ = hand_made(tmp_path / "d" / HAND)
    [s] = load_corpus(tmp_path / "d", 0.15)
    assert s.step_ns == pytest.approx(60e9) and s.grid[0] == 0
    assert s.grid[200] == s.grid[199] and s.grid[301] == s.grid[300] == s.grid[299]
    # Ten rows five minutes behind: five land on steps already seen (late, or a duplicate of
    # the last one), the next five on new steps, then a five-step gap.
    assert (s.grid[350:354] < s.grid[349]).all() and s.grid[354] == s.grid[349]
    assert (np.diff(s.grid[354:360]) == 1).all() and s.grid[360] - s.grid[359] == 6
    assert np.isnan(s.values[250]) and np.isnan(s.values[400])
    assert s.ts_text.tolist() == df["timestamp"].tolist()


@pytest.mark.unit
def test_stream_order_keeps_each_file_in_order(tmp_path: Path) -> None:
    info = generate_corpus(tmp_path, n_series=3, total_rows=3500, seed=2, min_rows=1000)
    series = load_corpus(info.data_dir, 0.15)
    fidx, rows = stream_order(series)
    assert len(fidx) == 3500
    for i, s in enumerate(series):
        assert np.array_equal(rows[fidx == i], np.arange(s.n))
    # Interleaved: the first thousand messages already span every file.
    assert set(fidx[:1000].tolist()) == {0, 1, 2}


# --- bad input (no services needed) ------------------------------------------------------------


@pytest.fixture
def offline_env() -> dict[str, str]:
    """Nothing listens at these addresses: input errors must come before service errors."""
    return {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
    }


def _corpus(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    pd.DataFrame(
        {"timestamp": pd.date_range("2026-01-01", periods=400, freq="min"), "value": 1.0}
    ).to_csv(data / "a" / "x.csv", index=False)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"a/x.csv": [["2026-01-01 02:00", "2026-01-01 02:10"]]}))
    return data, labels


@pytest.mark.unit
def test_bad_inputs_exit_2_with_a_clear_message(
    offline_env: dict[str, str], tmp_path: Path
) -> None:
    data, labels = _corpus(tmp_path)
    out = str(tmp_path / "out")

    def ev(d: Path | str, lab: Path | str, *extra: str) -> Any:
        return run_cli(
            ["evaluate", str(d), "--labels", str(lab), "--out", out, *extra], offline_env
        )

    r = ev(tmp_path / "nope", labels)
    assert r.exit_code == 2 and "does not exist" in r.output and "nope" in r.output
    r = ev(data, tmp_path / "missing.json")
    assert r.exit_code == 2 and "missing.json" in r.output and "not found" in r.output
    bad = tmp_path / "bad-labels.json"
    bad.write_text(json.dumps({"a/x.csv": [], "b/gone.csv": [["2026-01-01", "2026-01-02"]]}))
    r = ev(data, bad)
    assert r.exit_code == 2 and "b/gone.csv" in r.output and "not under" in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    r = ev(empty, labels)
    assert r.exit_code == 2 and "no CSV files" in r.output
    (data / "a" / "y.csv").write_text("when,reading\n2026-01-01,1\n")
    r = ev(data, labels)
    assert r.exit_code == 2 and "y.csv" in r.output and "timestamp" in r.output
    (data / "a" / "y.csv").write_text("timestamp,value\n2026-01-01,1\nyesterday,2\n")
    r = ev(data, labels)
    assert r.exit_code == 2 and "y.csv" in r.output and "row 3" in r.output
    (data / "a" / "y.csv").unlink()
    r = ev(data, labels, "--models", "Chronos")
    assert r.exit_code == 2 and "model hub" in r.output
    r = run_cli(
        ["evaluate", str(data), "--labels", str(labels), "--out", str(data / "res")], offline_env
    )
    assert r.exit_code == 2 and "inside DATA_DIR" in r.output
    # The new options: exclusive, labels required from somewhere, a label column that exists.
    r = ev(data, labels, "--probation", "0.2", "--train-rows", "50")
    assert r.exit_code == 2 and "exclude each other" in r.output
    r = run_cli(["evaluate", str(data), "--out", out], offline_env)
    assert r.exit_code == 2 and "--label-column" in r.output
    r = run_cli(["evaluate", str(data), "--out", out, "--label-column", "anomaly"], offline_env)
    assert r.exit_code == 2 and "no column 'anomaly'" in r.output and "x.csv" in r.output
    r = ev(data, labels, "--train-rows", "400")
    assert r.exit_code == 2 and "leaves none to score" in r.output
    # Good input, no services: a service error (exit 1), not a traceback.
    r = ev(data, labels)
    assert r.exit_code == 1 and "unreachable" in r.output
