"""SKAB's metrics (outlier F1/FAR/MAR over in-episode rows, the changepoint score) and the
share of rows at the top score, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iot_mlops.evaluation.score_report import score_corpus
from iot_mlops.evaluation.scores import scaled_sigmoid
from iot_mlops.evaluation.skab import outliers
from iot_mlops.evaluation.windows import Window, changepoint_windows

pytestmark = pytest.mark.unit

T0 = pd.Timestamp("2026-01-01 00:00:00", tz="UTC")
N = 20
TS = (T0 + pd.to_timedelta(np.arange(N), unit="s")).tz_localize(None).to_numpy("datetime64[ns]")
WIN = [Window(T0 + pd.Timedelta(seconds=10), T0 + pd.Timedelta(seconds=14))]  # rows 10-14


def rows(*idx: int) -> np.ndarray:
    f = np.zeros(N, dtype=bool)
    f[list(idx)] = True
    return f


def test_outlier_counts_by_hand() -> None:
    scored = np.array([0, 1, 1, 1, 1, 1, 1, 1], dtype=bool)
    truth = np.array([1, 1, 1, 0, 0, 0, 1, 0], dtype=bool)
    pred = np.array([1, 1, 0, 1, 0, 0, 1, 1], dtype=bool)
    o = outliers(scored, truth, pred)  # row 0 is not scored
    assert (o.tp, o.fp, o.fn, o.tn) == (2, 2, 1, 2)
    assert o.f1 == pytest.approx(4 / 7)  # 2 TP / (2 TP + FP + FN)
    assert o.far == pytest.approx(0.5) and o.mar == pytest.approx(1 / 3)
    assert outliers(scored, truth, np.zeros(8, bool)).to_dict()["f1"] == 0.0


def test_changepoint_windows_lie_to_the_right_and_are_cut_at_the_next() -> None:
    ts_ns = TS.view(np.int64)
    ws = changepoint_windows(ts_ns, WIN)
    # Changepoints: row 10 (the window's start) and row 15 (the row after its end). The first
    # window stops just before the second changepoint; the second lasts 60 s.
    assert [w.start for w in ws] == [T0 + pd.Timedelta(seconds=10), T0 + pd.Timedelta(seconds=15)]
    assert ws[0].end == T0 + pd.Timedelta(seconds=15) - pd.Timedelta(1, "ns")
    assert ws[1].end == T0 + pd.Timedelta(seconds=75)
    long = [Window(T0, T0 + pd.Timedelta(minutes=5))]
    t = (T0 + pd.to_timedelta(np.arange(0, 600, 1), unit="s")).as_unit("ns").asi8
    [a, b] = changepoint_windows(t, long)
    assert a.end - a.start == pd.Timedelta(seconds=60) and b.start == long[0].end + pd.Timedelta(
        seconds=1
    )


def frame(onset: np.ndarray, in_ep: np.ndarray, score: np.ndarray | None = None) -> pd.DataFrame:
    d = {"timestamp": TS, "is_anomaly": onset, "in_episode": in_ep}
    if score is not None:
        d["anomaly_score"] = score
    return pd.DataFrame(d)


def test_skab_scores_of_one_file_by_hand() -> None:
    """Train rows 0-4; window rows 10-14; the detector opens at 12 and is in an episode on
    rows 12-16 (so it closes at 17)."""
    score = np.linspace(0, 0.5, N)
    score[[13, 18]] = 0.9
    rep = score_corpus({"f.csv": frame(rows(12), rows(*range(12, 17)), score)}, {"f.csv": WIN},
                       train_rows=5)  # fmt: skip
    o = rep.outliers
    # Scored rows 5-19: TP 12-14, FP 15-16, FN 10-11, TN the other 8.
    assert (o.tp, o.fp, o.fn, o.tn) == (3, 2, 2, 8)
    assert (o.f1, o.far, o.mar) == pytest.approx((0.6, 0.2, 0.4))
    # Changepoint windows rows 10-14 and 15-19 (5 rows each): the onset at 12 and the close
    # at 17 are each rank 2 of 5, y = -3/5.
    tp = float(scaled_sigmoid(-0.6) / scaled_sigmoid(-1.0))
    std = rep.changepoint_scores["standard"]
    assert std == pytest.approx(100 * (2 * tp + 2) / 4)
    assert rep.changepoint_scores["reward_low_fn"] == pytest.approx(100 * (2 * tp + 4) / 6)
    # NAB window score counts the onset only: window rows 10-14, onset at rank 2.
    assert rep.scores["standard"] == pytest.approx(100 * (tp + 1) / 2)
    # Two of the 15 scored rows share the top score 0.9.
    assert (rep.top.score, rep.top.rows, rep.top.share) == pytest.approx((0.9, 2, 2 / 15))
    d = rep.to_dict()
    assert d["skab"]["outliers"]["f1"] == pytest.approx(0.6)
    assert d["skab"]["changepoints"]["windows"] == 2 and d["train_rows"] == 5
    assert d["top_score"]["share"] == pytest.approx(2 / 15)


def test_given_changepoints_replace_the_label_transitions() -> None:
    # Changepoints at rows 10 and 12: windows rows 10-11 (missed) and 12-19 (the onset at 12
    # is its first row: A_TP; the close at 17 is inside it and counts no more).
    given = {"f.csv": TS[[10, 12]].view(np.int64)}
    df = frame(rows(12), rows(*range(12, 17)))
    rep = score_corpus({"f.csv": df}, {"f.csv": WIN}, train_rows=5, changepoints=given)
    assert rep.changepoint_scores["standard"] == pytest.approx(100 * (-1 + 1 + 2) / 4)
    assert rep.files["f.csv"].changepoints.windows == 2


def test_a_false_close_and_the_fallback_without_in_episode() -> None:
    # No in_episode column: in_episode = the onsets, each closing on the next row. Onset at
    # row 6 (outside every window): a false outlier row and two false changepoints (6, 7).
    df = frame(rows(6), rows(6)).drop(columns="in_episode")
    rep = score_corpus({"f.csv": df}, {"f.csv": WIN}, train_rows=5)
    o = rep.outliers
    assert (o.tp, o.fp, o.fn, o.tn) == (0, 1, 5, 9)
    # No preceding window: each false changepoint costs the full A_FP; both windows missed.
    assert rep.changepoint_scores["standard"] == pytest.approx(100 * (-2 - 0.22 + 2) / 4)
    # Probation share instead of train rows: floor(0.15 * 20) = 3 rows not scored.
    assert score_corpus({"f.csv": df}, {"f.csv": WIN}).files["f.csv"].scored_rows == 17
