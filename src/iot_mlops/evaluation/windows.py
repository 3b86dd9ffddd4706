"""Labelled anomaly windows: the LABELS.json contract, windows from a 0/1 label column, and
the changepoint windows of SKAB's changepoint score (pure, no I/O except reading the labels file).

A window is a ``(start, end)`` pair of UTC timestamps, both ends inclusive.

Changepoints (SKAB's second metric)
-----------------------------------
The *true changepoints* of a file are its label transitions: the start of every labelled
window, and the first row after its end (when the file has one). On SKAB this reproduces the
first and the last changepoint its own ``changepoint`` column marks (the anomaly's start and
the row after its end); that column also marks one or two regime changes *inside* the
anomalous period (e.g. valve1/0.csv: rows 573, 630, 917, 974; the anomaly is rows 573-973),
which no 0/1 label can express (checked on all 34 labelled files: identical on one, on the
other 33 ours are its first and last), so those are not used by default; a changepoint column of the
files (``--changepoint-column``, SKAB's ``changepoint``) gives the changepoints instead. Each
changepoint gets a window of ``CHANGEPOINT_WINDOW`` (60 s) to its right, ``[t, t + 60 s]``;
when the next changepoint comes sooner, the window stops just before it (windows must not
overlap, and each changepoint keeps a window of its own).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iot_mlops.errors import ConfigError

CHANGEPOINT_WINDOW = pd.Timedelta(seconds=60)


class Window(tuple):  # type: ignore[type-arg]
    """A ``(start, end)`` pair of UTC timestamps that also carries the anomaly ``kind``.

    A tuple subclass so that it *is* the ``(start, end)`` pair of the labels contract
    (unpacking, equality and JSON all behave as a pair); ``kind`` rides along as an attribute.
    """

    kind: str | None

    def __new__(cls, start: pd.Timestamp, end: pd.Timestamp, kind: str | None = None) -> Window:
        obj = super().__new__(cls, (start, end))
        obj.kind = kind
        return obj

    @property
    def start(self) -> pd.Timestamp:
        return self[0]

    @property
    def end(self) -> pd.Timestamp:
        return self[1]

    def __repr__(self) -> str:
        return f"Window({self[0]}, {self[1]}, kind={self.kind!r})"


WindowLike = Sequence[Any]  # (start, end) with strings, Timestamps or datetime64


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def _utc(value: Any) -> pd.Timestamp:
    """A timestamp as tz-aware UTC; tz-naive input is taken as UTC."""
    ts = pd.Timestamp(value)
    if ts is pd.NaT or pd.isna(ts):
        raise ValueError("not a timestamp")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def load_labels(path: Path) -> dict[str, list[Window]]:
    """Read LABELS.json: ``{relpath: [[start, end] | {"start", "end", "kind"}, ...]}``.

    Returns windows sorted by start (``Window`` is a ``(start, end)`` tuple of UTC
    ``pd.Timestamp`` with a ``kind`` attribute). Windows of one file must not overlap: NAB
    merges overlapping windows, but silently merging would also merge their kinds, so we ask
    the user to do it."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"labels file {path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read labels file {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"labels file {path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"labels file {path} must hold a JSON object mapping each CSV's relative path "
            f"to a list of [start, end] windows, got {type(raw).__name__}"
        )
    labels: dict[str, list[Window]] = {}
    for rel, entries in raw.items():
        key = Path(rel).as_posix()  # tolerate "a\\b.csv"-free but "./a/b.csv"-style keys
        if key in labels:
            raise ConfigError(f"labels file {path}: {rel!r} is listed twice")
        if not isinstance(entries, list):
            raise ConfigError(
                f"labels file {path}: the entry of {rel!r} must be a list of windows, "
                f"got {type(entries).__name__}"
            )
        windows = [_parse_window(path, rel, i, e) for i, e in enumerate(entries)]
        windows.sort(key=lambda w: (w[0], w[1]))
        for a, b in itertools.pairwise(windows):
            if b[0] <= a[1]:
                raise ConfigError(
                    f"labels file {path}: windows of {rel!r} overlap "
                    f"([{a[0]}, {a[1]}] and [{b[0]}, {b[1]}])",
                    fix="merge overlapping windows into one",
                )
        labels[key] = windows
    return labels


def _parse_window(path: Path, rel: str, i: int, entry: Any) -> Window:
    where = f"labels file {path}: {rel!r} window #{i}"
    kind: str | None = None
    if isinstance(entry, dict):
        missing = {"start", "end"} - entry.keys()
        if missing:
            raise ConfigError(f"{where} lacks {', '.join(sorted(missing))}: {entry!r}")
        start_raw, end_raw = entry["start"], entry["end"]
        if entry.get("kind") is not None:
            kind = str(entry["kind"])
    elif isinstance(entry, list | tuple) and len(entry) == 2:
        start_raw, end_raw = entry
    else:
        raise ConfigError(
            f'{where} must be [start, end] or {{"start": .., "end": .., "kind": ..}}, got {entry!r}'
        )
    try:
        # Strings only: a bare number would be ambiguous (seconds? milliseconds?).
        if not isinstance(start_raw, str) or not isinstance(end_raw, str):
            raise ValueError
        start, end = _utc(start_raw), _utc(end_raw)
    except (ValueError, TypeError, OverflowError):
        raise ConfigError(
            f"{where} has an unreadable timestamp: {entry!r}",
            fix='use ISO 8601, e.g. "2026-01-01 00:00:00" (tz-naive means UTC)',
        ) from None
    if start > end:
        raise ConfigError(f"{where} starts after it ends: {entry!r}")
    return Window(start, end, kind)


# --------------------------------------------------------------------------------------------
# Windows from a 0/1 label column; merging; changepoint windows
# --------------------------------------------------------------------------------------------


def _ts(ns: int) -> pd.Timestamp:
    return pd.Timestamp(int(ns), tz="UTC")


def windows_from_flags(ts_ns: np.ndarray, flags: np.ndarray) -> list[Window]:
    """One window per maximal run of 1s in row order: from the earliest to the latest
    timestamp of the run's rows. Runs whose spans overlap (a clock jump) are merged."""
    f = np.asarray(flags, dtype=np.int8)
    edges = np.diff(np.concatenate(([0], f, [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    wins = [
        Window(_ts(ts_ns[a:b].min()), _ts(ts_ns[a:b].max()))
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
    ]
    return merge_windows(wins)


def merge_windows(windows: Iterable[Window]) -> list[Window]:
    """Sorted, with overlapping (or touching) windows merged into one; a merged window keeps
    the first kind given."""
    out: list[Window] = []
    for w in sorted(windows, key=lambda w: (w.start, w.end)):
        if out and w.start <= out[-1].end:
            last = out[-1]
            out[-1] = Window(last.start, max(last.end, w.end), last.kind or w.kind)
        else:
            out.append(w)
    return out


def changepoints(ts_ns: np.ndarray, windows: Sequence[Any]) -> np.ndarray:
    """True changepoints (UTC ns, sorted, unique) of a file: every window's start and the
    timestamp of the first row after its end (the row that follows the window's last row in
    time), when there is one."""
    t = np.sort(np.asarray(ts_ns, dtype=np.int64))
    cps = []
    for w in windows:
        start, end = _utc(w[0]).value, _utc(w[1]).value
        cps.append(start)
        nxt = np.searchsorted(t, end, side="right")
        if nxt < len(t):
            cps.append(int(t[nxt]))
    return np.unique(np.asarray(cps, dtype=np.int64))


def changepoint_windows(
    ts_ns: np.ndarray,
    windows: Sequence[Any],
    width: pd.Timedelta = CHANGEPOINT_WINDOW,
    given: np.ndarray | None = None,
) -> list[Window]:
    """A window ``[cp, cp + width]`` to the right of every true changepoint (see the module
    docstring; ``given``: these changepoints, UTC ns, instead), cut just before the next
    changepoint."""
    cps = changepoints(ts_ns, windows) if given is None else np.unique(given.astype(np.int64))
    w_ns = int(width.value)
    out = []
    for i, c in enumerate(cps.tolist()):
        end = c + w_ns
        if i + 1 < len(cps):
            end = min(end, int(cps[i + 1]) - 1)
        out.append(Window(_ts(c), _ts(end), "changepoint"))
    return out
