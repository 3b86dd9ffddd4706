"""The detector's outputs mapped back to (file, row, metric), and each row's device decision.

Per reading the scores topic carries (DESIGN.md's episode contract) ``anomaly_score`` (the
series score), ``is_anomaly`` (the onset of a series episode), ``in_episode`` (the series is in
an episode after this reading), ``closed`` (this reading closed the series' episode) and
``device``: null, or the device-level decision that this reading completed,
``{"t_ms", "score", "onset", "in_episode", "closed"}`` for the grid time ``t_ms``.

Fallbacks, for a detector that does not send a field yet:

* ``in_episode`` absent: the same as ``is_anomaly``;
* ``closed`` absent (on every reading of the file): the readings after which the series is no
  longer in an episode while it was before;
* ``device`` absent or null on every reading of a file: the device's decision for a row is
  derived from its series: score = their maximum, onset if any series had an onset at that
  row, in episode if any series is, closed when the device stops being in an episode.

A row with no device decision of its own (a duplicate, or a row whose readings were all
dead-lettered) keeps the device's in-episode state of the row before; a reading without a
record (dead-lettered) keeps its series' in-episode state when the detector sends it.
A single-series file's device decisions are its series'.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from iot_mlops.errors import ModelError
from iot_mlops.evaluation.datasets import SeriesData
from iot_mlops.evaluation.grid import grid_index_of_ms


@dataclass
class Decisions:
    """Per row (device level: shape (rows,)) or per reading (series: (rows, metrics))."""

    score: np.ndarray  # float64 in [0, 1]
    onset: np.ndarray  # bool: an episode opened here (the output's is_anomaly)
    in_episode: np.ndarray  # bool: in an episode after this row
    closed: np.ndarray  # bool: the episode closed here

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> Decisions:
        return cls(
            np.zeros(shape), np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(shape, bool)
        )


@dataclass
class FileResult:
    series: Decisions  # (rows, metrics)
    outcome: np.ndarray  # object (rows, metrics): scored | warming_up | late | duplicate | ...
    device: Decisions  # (rows,)
    device_from_detector: bool = False

    # The single-series view (today's names).
    @property
    def score(self) -> np.ndarray:
        return self.device.score

    @property
    def flag(self) -> np.ndarray:
        return self.device.onset


def _closed_from(in_episode: np.ndarray) -> np.ndarray:
    prev = np.concatenate((np.zeros_like(in_episode[:1]), in_episode[:-1]))
    return prev & ~in_episode


def _carry_forward(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``values`` where ``known``, else the last known value before (False at the start);
    along the first axis."""
    idx = np.arange(len(values)).reshape((-1,) + (1,) * (values.ndim - 1))
    last = np.maximum.accumulate(np.where(known, idx, -1), axis=0)
    got = np.take_along_axis(values, np.clip(last, 0, None), axis=0)
    return np.where(last >= 0, got, False)


def derived_device(series: Decisions) -> Decisions:
    """The device's decisions derived from its series (the fallback of the module docs)."""
    in_ep = series.in_episode.any(axis=1)
    return Decisions(
        score=series.score.max(axis=1),
        onset=series.onset.any(axis=1),
        in_episode=in_ep,
        closed=_closed_from(in_ep),
    )


class _Collector:
    """Flat per-reading arrays of the whole corpus, filled from the score records."""

    def __init__(self, series: list[SeriesData], where: list[tuple[np.ndarray, np.ndarray]]):
        self.series = series
        self.starts = np.cumsum([0] + [s.n * s.m for s in series])
        total = int(self.starts[-1])
        n_parts = 1 + max(int(w[0].max()) for w in where)
        ends = [0] * n_parts
        for part, off in where:
            for p in range(n_parts):
                sel = part == p
                if sel.any():
                    ends[p] = max(ends[p], int(off[sel].max()) + 1)
        self.lookup = [np.full(e, -1, dtype=np.int64) for e in ends]  # offset -> reading id
        for i, (part, off) in enumerate(where):
            flat_p, flat_o = part.ravel(), off.ravel()
            for p in range(n_parts):
                sel = flat_p == p
                self.lookup[p][flat_o[sel]] = self.starts[i] + np.flatnonzero(sel)
        self.file_of = np.repeat(np.arange(len(series)), [s.n * s.m for s in series])
        self.d = Decisions.empty((total,))
        self.outcome = np.full(total, "missing", dtype=object)
        self.has_record = np.zeros(total, dtype=bool)
        self.sent_in_episode = np.zeros(len(series), dtype=bool)
        self.sent_closed = np.zeros(len(series), dtype=bool)
        self.device: list[list[tuple[int, dict[str, Any]]]] = [[] for _ in series]
        self.other_versions: Counter[str] = Counter()

    def reading(self, p: int, o: int) -> int:
        if p >= len(self.lookup) or o >= len(self.lookup[p]):
            return -1
        return int(self.lookup[p][o])

    def add(self, r: dict[str, Any], version: str) -> None:
        g = self.reading(int(r["source_partition"]), int(r["source_offset"]))
        if g < 0:
            return  # not one of ours (cannot happen on a fresh topic)
        f = int(self.file_of[g])
        self.outcome[g] = r["outcome"]
        self.has_record[g] = True
        scored = r["outcome"] == "scored"
        if scored:
            self.d.score[g] = min(max(float(r.get("anomaly_score") or 0.0), 0.0), 1.0)
            self.d.onset[g] = bool(r.get("is_anomaly"))
            mv = r.get("model_version")
            if mv is not None and str(mv) != str(version):
                self.other_versions[str(mv)] += 1
        if "in_episode" in r:
            self.sent_in_episode[f] = True
            self.d.in_episode[g] = bool(r["in_episode"])
        else:
            self.d.in_episode[g] = self.d.onset[g]
        if "closed" in r:
            self.sent_closed[f] = True
            self.d.closed[g] = bool(r["closed"])
        if isinstance(r.get("device"), dict):
            self.device[f].append((g - int(self.starts[f]), r["device"]))

    def dead_letter(self, headers: dict[str, bytes]) -> None:
        with contextlib.suppress(KeyError, ValueError, IndexError):
            g = self.reading(int(headers["source.partition"]), int(headers["source.offset"]))
            if g >= 0:
                self.outcome[g] = "dead_letter"

    def file_result(self, i: int) -> FileResult:
        s = self.series[i]
        a, b = int(self.starts[i]), int(self.starts[i + 1])
        shape = (s.n, s.m)
        in_ep = self.d.in_episode[a:b].reshape(shape)
        if self.sent_in_episode[i]:
            in_ep = _carry_forward(in_ep, self.has_record[a:b].reshape(shape))
        closed = self.d.closed[a:b].reshape(shape) if self.sent_closed[i] else _closed_from(in_ep)
        series = Decisions(
            self.d.score[a:b].reshape(shape), self.d.onset[a:b].reshape(shape), in_ep, closed
        )
        outcome = self.outcome[a:b].reshape(shape)
        if s.single:
            dev = Decisions(series.score[:, 0], series.onset[:, 0], in_ep[:, 0], closed[:, 0])
            return FileResult(series, outcome, dev)
        if self.device[i]:
            return FileResult(series, outcome, device_decisions(s, self.device[i]), True)
        return FileResult(series, outcome, derived_device(series))


def device_decisions(s: SeriesData, decisions: list[tuple[int, dict[str, Any]]]) -> Decisions:
    """The detector's device-level decisions of one file, each on the first row of the grid
    step it is for; rows without one keep the device's in-episode state of the row before."""
    steps, first = np.unique(s.grid, return_index=True)
    d = Decisions.empty((s.n,))
    decided = np.zeros(s.n, dtype=bool)
    for local, dec in decisions:
        k = grid_index_of_ms(int(dec.get("t_ms", 0)))
        pos = int(np.searchsorted(steps, k))
        row = int(first[pos]) if pos < len(steps) and steps[pos] == k else local // s.m
        d.score[row] = min(max(float(dec.get("score") or 0.0), 0.0), 1.0)
        d.onset[row] = bool(dec.get("onset"))
        d.in_episode[row] = bool(dec.get("in_episode", dec.get("onset")))
        d.closed[row] = bool(dec.get("closed"))
        decided[row] = True
    d.in_episode = _carry_forward(d.in_episode, decided)
    return d


def collect_scores(
    series: list[SeriesData],
    where: list[tuple[np.ndarray, np.ndarray]],
    records: list[Any],
    dead: list[Any],
    version: str,
) -> list[FileResult]:
    """Map each score record (and dead letter) back to its (file, row, metric)."""
    c = _Collector(series, where)
    for m in records:
        c.add(orjson.loads(m.value()), version)
    for m in dead:
        c.dead_letter(dict(m.headers() or []))
    if c.other_versions:
        raise ModelError(
            f"{sum(c.other_versions.values())} readings were scored by another version "
            f"({', '.join(sorted(c.other_versions))}) than the evaluated version {version}: the "
            "alias moved during the evaluation",
            fix="run one evaluation per --model-name at a time",
        )
    return [c.file_result(i) for i in range(len(series))]


def outcome_counts(results: list[FileResult]) -> dict[str, int]:
    n: Counter[str] = Counter()
    for r in results:
        n.update(r.outcome.ravel().tolist())
    return dict(sorted(n.items()))
