"""The detector's outputs mapped back to (file, row, metric), with the fallbacks for fields
the detector does not send, and the device decisions (derived or the detector's own)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from iot_mlops.evaluation.datasets import SeriesData
from iot_mlops.evaluation.grid import synthetic_ms
from iot_mlops.evaluation.results import Decisions, collect_scores, derived_device

pytestmark = pytest.mark.unit


class Msg:
    def __init__(self, value: dict[str, Any] | None = None, headers: Any = None) -> None:
        self._v, self._h = value, headers

    def value(self) -> bytes:
        return orjson.dumps(self._v)

    def headers(self) -> Any:
        return self._h


def device(n: int, m: int) -> SeriesData:
    return SeriesData(
        rel="d.csv", device_id="d.csv", ts_text=np.array([str(i) for i in range(n)], object),
        ts_ns=np.arange(n, dtype=np.int64) * 10**9, metrics=[f"m{j}" for j in range(m)],
        value_text=np.zeros((n, m), object), values=np.zeros((n, m)), single=False,
        grid=np.arange(n, dtype=np.int64),
    )  # fmt: skip


def records(s: SeriesData, **per_reading: Any) -> tuple[list, list[Msg]]:
    off = np.arange(s.n * s.m, dtype=np.int64).reshape(s.n, s.m)
    where = [(np.zeros((s.n, s.m), np.int32), off)]
    msgs = []
    for r in range(s.n):
        for j in range(s.m):
            rec = {
                "source_partition": 0,
                "source_offset": int(off[r, j]),
                "outcome": "scored",
                "anomaly_score": 0.1 * r + 0.01 * j,
                "is_anomaly": False,
                "model_version": "1",
            }
            for k, f in per_reading.items():
                v = f(r, j)
                if v is not None:
                    rec[k] = v
            msgs.append(Msg(rec))
    return where, msgs


def test_device_decisions_derived_from_series_without_device_field() -> None:
    s = device(6, 2)
    where, msgs = records(
        s, is_anomaly=lambda r, j: (r, j) in {(1, 0), (2, 1)},
        in_episode=lambda r, j: (j == 0 and 1 <= r <= 3) or (j == 1 and r == 2),
    )  # fmt: skip
    msgs[7] = Msg(headers=[("source.partition", b"0"), ("source.offset", b"7")])  # (3, 1) dead
    [res] = collect_scores([s], where, [m for i, m in enumerate(msgs) if i != 7], [msgs[7]], "1")
    d = res.device
    assert d.onset.tolist() == [False, True, True, False, False, False]
    assert d.in_episode.tolist() == [False, True, True, True, False, False]
    assert d.closed.tolist() == [False, False, False, False, True, False]
    assert d.score == pytest.approx([0.01, 0.11, 0.21, 0.3, 0.41, 0.51])
    assert res.outcome[3, 1] == "dead_letter" and res.series.score[3, 1] == 0.0
    # Series closes derived from in_episode (no "closed" field sent).
    assert res.series.closed[:, 0].tolist() == [False] * 4 + [True, False]
    assert not res.device_from_detector


def test_device_decisions_from_the_detector_and_fallback_in_episode() -> None:
    s = device(5, 2)
    t = synthetic_ms(s.grid)
    decision = {  # completed by the last metric of rows 1, 2 and 4 (row 3: none, a duplicate)
        1: {"t_ms": int(t[1]), "score": 0.8, "onset": True, "in_episode": True, "closed": False},
        2: {"t_ms": int(t[2]), "score": 0.7, "onset": False, "in_episode": True, "closed": False},
        4: {"t_ms": int(t[4]), "score": 0.1, "onset": False, "in_episode": False, "closed": True},
    }
    where, msgs = records(
        s, is_anomaly=lambda r, j: (r, j) == (1, 0),
        device=lambda r, j: decision.get(r) if j == 1 else None,
    )  # fmt: skip
    [res] = collect_scores([s], where, msgs, [], "1")
    d = res.device
    assert res.device_from_detector
    assert d.onset.tolist() == [False, True, False, False, False]
    assert d.in_episode.tolist() == [False, True, True, True, False]  # row 3 keeps the state
    assert d.closed.tolist() == [False, False, False, False, True]
    assert d.score == pytest.approx([0, 0.8, 0.7, 0, 0.1])
    # No in_episode field: the same as is_anomaly.
    assert res.series.in_episode[:, 0].tolist() == [False, True, False, False, False]


def test_derived_device_is_max_and_any() -> None:
    series = Decisions(
        score=np.array([[0.1, 0.3], [0.5, 0.2]]), onset=np.array([[0, 0], [0, 1]], bool),
        in_episode=np.array([[1, 0], [0, 1]], bool), closed=np.zeros((2, 2), bool),
    )  # fmt: skip
    d = derived_device(series)
    assert d.score.tolist() == [0.3, 0.5] and d.onset.tolist() == [False, True]
    assert d.in_episode.tolist() == [True, True] and d.closed.tolist() == [False, False]
