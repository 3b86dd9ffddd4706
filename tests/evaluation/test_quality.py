"""Detection-quality scoring: NAB-style window score, point/event metrics, labels loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from iot_mlops.errors import ConfigError
from iot_mlops.evaluation.score_report import score_corpus
from iot_mlops.evaluation.scores import (
    PROFILES,
    Window,
    corpus_scores,
    event_metrics,
    load_labels,
    point_metrics,
    scaled_sigmoid,
    window_score,
)
from iot_mlops.evaluation.sweep import crossings

pytestmark = pytest.mark.unit

N = 1000
T0 = np.datetime64("2026-01-01T00:00:00", "ms")
TS = T0 + np.arange(N).astype("timedelta64[m]")
# Two windows of 100 rows each: rows 300-399 and 600-699.
WINDOWS = [(TS[300], TS[399]), (TS[600], TS[699])]


def flags_at(*rows: int, n: int = N) -> np.ndarray:
    f = np.zeros(n, dtype=bool)
    f[list(rows)] = True
    return f


def score(flags: np.ndarray, profile: str = "standard", windows=WINDOWS) -> float:
    s = window_score(TS, flags, windows, profile)["score"]
    assert s is not None
    return s


# --------------------------------------------------------------------------------------------
# Window score
# --------------------------------------------------------------------------------------------


def test_scaled_sigmoid_matches_nab_reference_points() -> None:
    # NAB's documented values: -1 -> 0.98661, -0.5 -> 0.84828, 0 -> 0, 1 -> -0.98661, >=3 -> -1.
    got = scaled_sigmoid(np.array([-1.0, -0.5, 0.0, 1.0, 3.0, 10.0]))
    assert np.allclose(got, [0.98661, 0.84828, 0.0, -0.98661, -1.0, -1.0], atol=1e-5)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_null_scores_0_and_perfect_scores_100(profile: str) -> None:
    assert score(np.zeros(N, dtype=bool), profile) == pytest.approx(0.0)
    assert score(flags_at(300, 600), profile) == pytest.approx(100.0)
    inputs = [(TS, np.zeros(N, dtype=bool), WINDOWS), (TS, flags_at(300, 600), WINDOWS)]
    # One null file and one perfect file: half way, and independent of the profile.
    assert corpus_scores(inputs, [profile])[profile] == pytest.approx(50.0)
    assert corpus_scores([(TS, flags_at(300, 600), WINDOWS)], [profile])[profile] == (
        pytest.approx(100.0)
    )


def test_earlier_detection_inside_a_window_is_worth_more() -> None:
    early, middle, late = score(flags_at(305)), score(flags_at(350)), score(flags_at(395))
    assert early > middle > late > score(np.zeros(N, dtype=bool))


def test_a_window_counts_once_however_many_detections() -> None:
    all_rows = np.zeros(N, dtype=bool)
    all_rows[300:400] = True
    all_rows[600:700] = True
    assert score(all_rows) == pytest.approx(100.0)
    r = window_score(TS, all_rows, WINDOWS, "standard")
    assert (r["detected"], r["missed"], r["fp"]) == (2, 0, 0)
    # The earliest detection decides, not the last or the count.
    assert score(flags_at(350, 360, 370, 600)) == pytest.approx(score(flags_at(350, 600)))


def test_false_positives_lower_the_score_and_cost_more_under_reward_low_fp() -> None:
    perfect = flags_at(300, 600)
    noisy = flags_at(300, 600, 100, 150, 200)  # FPs before any window: full FP cost
    std_drop = 100 - score(noisy, "standard")
    low_fp_drop = 100 - score(noisy, "reward_low_fp")
    assert std_drop > 0
    assert low_fp_drop == pytest.approx(2 * std_drop)
    assert score(noisy, "reward_low_fp") < score(noisy, "standard") < score(perfect)
    raw = window_score(TS, noisy, WINDOWS, "standard")["raw"]
    assert raw == pytest.approx(2 - 3 * 0.11)


def test_false_positive_just_after_a_window_costs_less_than_a_late_one() -> None:
    base = flags_at(300, 600)
    just_after = base | flags_at(401)
    later = base | flags_at(480)
    far = base | flags_at(999)  # 3 window lengths (3 * 99 rows) after row 699: full cost
    assert score(just_after) > score(later) > score(far)
    assert window_score(TS, far, WINDOWS)["raw"] == pytest.approx(2 - 0.11)


def test_missed_windows_cost_more_under_reward_low_fn() -> None:
    one_missed = flags_at(300)
    std = window_score(TS, one_missed, WINDOWS, "standard")
    low_fn = window_score(TS, one_missed, WINDOWS, "reward_low_fn")
    assert std["raw"] == pytest.approx(1 - 1)
    assert low_fn["raw"] == pytest.approx(1 - 2)
    # A detector that finds everything at the price of some FPs is worth more when misses
    # are expensive (the profiles' purpose): reward_low_fn > standard > reward_low_fp.
    catch_all = flags_at(300, 600, 50, 100, 150, 200, 250)
    assert (
        score(catch_all, "reward_low_fn")
        > score(catch_all, "standard")
        > score(catch_all, "reward_low_fp")
    )


def test_probation_rows_are_not_scored() -> None:
    windows = [(TS[50], TS[80]), *WINDOWS]
    flags = flags_at(10, 20, 300, 600)
    r = window_score(TS, flags, windows, "standard", probation_rows=150)
    # The window inside the probation is skipped; the probation's flags are ignored.
    assert (r["windows"], r["skipped_windows"], r["fp"]) == (2, 1, 0)
    assert r["score"] == pytest.approx(100.0)
    r0 = window_score(TS, flags, windows, "standard")
    assert r0["windows"] == 3 and r0["fp"] == 2


def test_membership_is_by_timestamp_with_repeats_and_backward_jumps() -> None:
    # Row order is arrival order: a repeated timestamp and a clock that jumps back.
    ts = np.array(
        ["2026-01-01T00:00", "2026-01-01T00:01", "2026-01-01T00:02", "2026-01-01T00:02",
         "2026-01-01T00:03", "2026-01-01T00:01", "2026-01-01T00:04", "2026-01-01T00:05"],
        dtype="datetime64[ms]",
    )  # fmt: skip
    win = [(pd.Timestamp("2026-01-01T00:02Z"), pd.Timestamp("2026-01-01T00:03Z"))]
    # Rows 2, 3, 4 are the window's; row 5 (clock back to 00:01) is outside it.
    first = window_score(ts, flags_at(2, n=8), win)
    repeat = window_score(ts, flags_at(3, n=8), win)
    jumped = window_score(ts, flags_at(5, n=8), win)
    assert first["score"] == pytest.approx(100.0)
    assert 0 < repeat["score"] < 100
    assert jumped["detected"] == 0 and jumped["fp"] == 1
    m = point_metrics(ts, np.ones(8, dtype=bool), win)
    assert (m.tp, m.fp, m.fn) == (3, 5, 0)


def test_windows_may_be_given_unsorted_and_as_strings() -> None:
    shuffled = [("2026-01-01 10:00:00", "2026-01-01 11:39:00"), (str(TS[300]), str(TS[399]))]
    assert score(flags_at(300, 600), windows=shuffled) == pytest.approx(100.0)


def test_overlapping_windows_are_rejected() -> None:
    with pytest.raises(ConfigError, match="overlap"):
        window_score(TS, flags_at(1), [(TS[10], TS[20]), (TS[15], TS[30])])


def test_no_windows_has_no_normalised_score_but_counts_fps() -> None:
    r = window_score(TS, flags_at(5, 6), [])
    assert r["score"] is None and r["fp"] == 2 and r["raw"] == pytest.approx(-0.22)


# --------------------------------------------------------------------------------------------
# Point-wise and event-wise metrics
# --------------------------------------------------------------------------------------------

TS20 = T0 + np.arange(20).astype("timedelta64[m]")


def test_point_metrics_on_a_hand_made_case() -> None:
    win = [(TS20[5], TS20[9])]
    flags = flags_at(3, 4, 6, 7, 15, n=20)
    m = point_metrics(TS20, flags, win)
    assert (m.tp, m.fp, m.fn) == (2, 3, 3)
    assert m.precision == pytest.approx(0.4)
    assert m.recall == pytest.approx(0.4)
    assert m.f1 == pytest.approx(0.4)


def test_event_metrics_on_a_hand_made_case() -> None:
    win = [(TS20[5], TS20[9]), (TS20[12], TS20[13])]
    # Events: rows 3-4 (outside), 6-7 (inside), 9-11 (overlaps the first window's end), 17.
    flags = flags_at(3, 4, 6, 7, 9, 10, 11, 17, n=20)
    m = event_metrics(TS20, flags, win)
    assert (m.tp, m.fn) == (1, 1)  # the first window is detected, the second missed
    assert (m.tp_pred, m.fp) == (2, 2)
    assert m.precision == pytest.approx(0.5)
    assert m.recall == pytest.approx(0.5)
    assert m.f1 == pytest.approx(0.5)


def test_undefined_ratios_are_zero() -> None:
    m = event_metrics(TS20, np.zeros(20, dtype=bool), [(TS20[5], TS20[9])])
    assert (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)


# --------------------------------------------------------------------------------------------
# Labels loader
# --------------------------------------------------------------------------------------------


def write(tmp_path: Path, content: object | str) -> Path:
    p = tmp_path / "labels.json"
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    return p


def test_load_labels_reads_pairs_and_objects_as_utc(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        {
            "a/x.csv": [["2026-01-02 00:00:00", "2026-01-02 01:00:00"]],
            "y.csv": [
                {"start": "2026-01-03T05:00:00+02:00", "end": "2026-01-03T04:00Z", "kind": "dip"},
                {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
            ],
            "empty.csv": [],
        },
    )
    labels = load_labels(p)
    (w,) = labels["a/x.csv"]
    assert w == (pd.Timestamp("2026-01-02T00:00Z"), pd.Timestamp("2026-01-02T01:00Z"))
    assert str(w[0].tz) == "UTC" and w.kind is None
    first, second = labels["y.csv"]  # sorted by start
    assert first.start == pd.Timestamp("2026-01-01T00:00Z") and first.kind is None
    assert second.start == pd.Timestamp("2026-01-03T03:00Z") and second.kind == "dip"
    assert labels["empty.csv"] == []
    start, end = second  # still a (start, end) pair
    assert isinstance(second, Window) and start < end


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ([["2026-01-01", "2026-01-02"]], "must hold a JSON object"),
        ({"x.csv": "2026-01-01"}, "'x.csv' must be a list"),
        ({"x.csv": [["2026-01-02", "2026-01-01"]]}, r"'x.csv' window #0 starts after it ends"),
        ({"x.csv": [["2026-01-01", "2026-01-01T01:00"], ["yesterday", "2026-01-03"]]}, "#1"),
        ({"x.csv": [[1767225600, 1767229200]]}, "unreadable timestamp"),
        ({"x.csv": [["2026-01-01"]]}, r"must be \[start, end\]"),
        ({"x.csv": [{"start": "2026-01-01"}]}, "lacks end"),
        ({"x.csv": [["2026-01-01", "2026-01-03"], ["2026-01-02", "2026-01-04"]]}, "overlap"),
    ],
)
def test_load_labels_errors_name_the_file_and_entry(
    tmp_path: Path, content: object, match: str
) -> None:
    p = write(tmp_path, content)
    with pytest.raises(ConfigError, match=match) as e:
        load_labels(p)
    assert str(p) in str(e.value)


def test_load_labels_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_labels(tmp_path / "nope.json")


# --------------------------------------------------------------------------------------------
# Corpus report
# --------------------------------------------------------------------------------------------


def frame(flags: np.ndarray, ts: np.ndarray = TS) -> pd.DataFrame:
    text = np.char.add(np.datetime_as_string(ts, unit="ms"), "Z")
    return pd.DataFrame({"timestamp": text, "value": 0.0, "is_anomaly": flags})


def test_score_corpus_totals_kinds_and_outputs() -> None:
    labels = {
        "a.csv": [Window(*WINDOWS[0], kind="spike"), Window(*WINDOWS[1], kind="dip")],
        "b/c.csv": [Window(*WINDOWS[0], kind="spike")],
    }
    results = {
        "a.csv": frame(flags_at(300, 600)),  # perfect
        "b/c.csv": frame(np.zeros(N, dtype=bool)),  # null
        "d.csv": frame(flags_at(500)),  # no labels: one FP
    }
    rep = score_corpus(results, labels, probation=0.15)
    scores = rep.scores
    # raw: 2 (a) - 1 (b) - 0.11 (d); null -3; perfect 3.
    assert scores["standard"] == pytest.approx(100 * (2 - 1 - 0.11 + 3) / 6)
    assert rep.unlabelled_files == ["d.csv"]
    assert rep.kinds["spike"].windows == 2 and rep.kinds["spike"].detected == 1
    assert rep.kinds["dip"].recall == 1.0
    assert rep.files["a.csv"].normalised("standard") == pytest.approx(100.0)
    assert rep.files["b/c.csv"].scored_rows == N - 150
    assert (rep.event.tp, rep.event.fn, rep.event.fp) == (2, 1, 1)
    d = json.loads(json.dumps(rep.to_dict()))  # JSON-ready, no NaN
    assert d["scores"]["standard"] == pytest.approx(scores["standard"])
    assert d["kinds"]["spike"]["recall"] == pytest.approx(0.5)
    assert d["totals"]["windows"] == 3
    console = Console(record=True, width=120)
    rep.render(console, per_file=True)
    text = console.export_text()
    assert "reward_low_fn" in text and "spike" in text and "b/c.csv" in text


def test_score_corpus_rejects_labels_without_result() -> None:
    with pytest.raises(ConfigError, match=r"no result: x\.csv"):
        score_corpus({}, {"x.csv": []})


def test_score_corpus_accepts_datetime_columns() -> None:
    df = frame(flags_at(300, 600))
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    rep = score_corpus({"a.csv": df}, {"a.csv": WINDOWS}, probation=0.0)
    assert rep.scores["reward_low_fp"] == pytest.approx(100.0)


# --------------------------------------------------------------------------------------------
# The best threshold over the scores
# --------------------------------------------------------------------------------------------


def scored_frame(scores: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {"timestamp": TS, "is_anomaly": np.zeros(N, dtype=bool), "anomaly_score": scores}
    )


def test_crossings_are_one_detection_per_excursion() -> None:
    s = np.array([0.1, 0.7, 0.8, 0.2, np.nan, 0.9, 0.9])
    assert crossings(s, 0.5).tolist() == [False, True, False, False, False, True, False]


def test_scores_that_rank_reach_the_perfect_score_at_the_best_threshold() -> None:
    """The detector fired nowhere (its own score is 0), but its scores peak at each window's
    first row over a noisy background: a threshold between them is perfect."""
    rng = np.random.default_rng(1)
    s = rng.uniform(0.0, 0.4, N)
    s[[300, 600]] = 0.95
    rep = score_corpus({"a.csv": scored_frame(s)}, {"a.csv": WINDOWS}, probation=0.15)
    assert rep.scores["standard"] == pytest.approx(0.0)
    best = rep.best_thresholds["standard"]
    assert best.score == pytest.approx(100.0)
    assert best.threshold is not None and 0.4 < best.threshold <= 0.95
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["best_threshold"]["standard"]["score"] == pytest.approx(100.0)
    console = Console(record=True, width=140)
    rep.render(console)
    assert "at the best threshold" in console.export_text()


def test_scores_that_do_not_rank_are_best_never_fired() -> None:
    """Peaks only outside the windows: every threshold that fires costs, so never firing is
    the best (threshold None, score 0)."""
    s = np.full(N, 0.1)
    s[[200, 500, 800, 900]] = 0.9
    rep = score_corpus({"a.csv": scored_frame(s)}, {"a.csv": WINDOWS}, probation=0.15)
    best = rep.best_thresholds["standard"]
    assert best.threshold is None and best.score == pytest.approx(0.0)
