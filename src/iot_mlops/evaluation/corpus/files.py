"""Writing a generated corpus: each series as a ``timestamp,value`` CSV in its interval's
folder, the labels and the manifest; ``generate_corpus`` deals the series out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iot_mlops.errors import ConfigError
from iot_mlops.evaluation.corpus import spec
from iot_mlops.evaluation.corpus.frame import (
    _frame,
    _report_times,
    _to_units,
)
from iot_mlops.evaluation.corpus.hard import (
    _make_hard_series,
)
from iot_mlops.evaluation.corpus.signal import (
    _clean,
    _inject,
    _noise,
    _place,
    _timeline,
)
from iot_mlops.evaluation.corpus.spec import (
    COUNTER_EVERY,
    COUNTER_KINDS,
    FREQS,
    HARD_FREQ_WEIGHTS,
    HARD_IRREGULARITIES,
    HARD_KINDS,
    IRREGULARITIES,
    KINDS,
    PROFILES,
    CorpusInfo,
    LabelWindow,
    SeriesInfo,
    _row_counts,
)


def _make_series(
    rng: np.random.Generator, n: int, interval_s: int, forced: str | None, kinds: list[str]
) -> tuple[pd.DataFrame, list[LabelWindow], list[str]]:
    """One series of the standard profile."""
    feats = {f for f in IRREGULARITIES if rng.random() < 0.3}
    if forced:
        feats.add(forced)
    t = _timeline(rng, n, interval_s, feats)
    info = sorted(feats - {"clock_jumps"})
    noise = _noise(rng, n, info)
    x = _clean(rng, t, interval_s, info) + noise
    anomalies = _place(rng, n, kinds)
    for an in anomalies:
        _inject(rng, x, noise, an)
    reported = _report_times(rng, t, interval_s, feats, anomalies, info)
    values = _to_units(rng, x)
    return _frame(rng, t, reported, values, anomalies, feats, info, interval_s)


def _write(
    out_dir: Path,
    frames: list[tuple[str, pd.DataFrame]],
    series: list[SeriesInfo],
    seed: int,
    source: str,
    params: dict[str, Any],
) -> CorpusInfo:
    out_dir = Path(out_dir)
    data_dir = out_dir / "data"
    for rel, df in frames:
        path = data_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        # Hand-joined: 5x faster than DataFrame.to_csv; repr gives the shortest exact float.
        # Counters (integer columns) are written as integers, everything else as floats.
        col = df["value"]
        values = col.tolist() if col.dtype.kind in "iu" else col.astype(float).tolist()
        body = "\n".join(
            f"{t},{v!r}" for t, v in zip(df["timestamp"].tolist(), values, strict=True)
        )
        path.write_text("timestamp,value\n" + body + "\n", encoding="utf-8")
    info = CorpusInfo(data_dir, out_dir / "labels.json", seed, series, source)
    info.labels_path.write_text(json.dumps(info.labels(), indent=1) + "\n", encoding="utf-8")
    manifest = {"params": params, "window_rule": spec.__doc__, **info.to_dict()}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", "utf-8")
    return info


def _deal(rng: np.random.Generator, decks: dict[str, list[str]], pool: tuple[str, ...]) -> str:
    """The next kind from ``pool``'s deck, reshuffled from the corpus rng when empty."""
    deck = decks.setdefault(",".join(pool), [])
    if not deck:
        deck.extend(str(k) for k in rng.permutation(pool))
    return deck.pop()


def _one_series(
    rng: np.random.Generator, decks: dict[str, list[str]], i: int, n: int, seed: int, hard: bool
) -> tuple[str, pd.DataFrame, SeriesInfo]:
    """Series ``i`` (``n`` rows): its path, its file content and its manifest entry."""
    srng = np.random.default_rng([seed, 7002, i])  # per series: stable under edits above
    freq_list = list(FREQS)
    if hard:
        interval = int(srng.choice(freq_list, p=HARD_FREQ_WEIGHTS))
    else:
        interval = freq_list[int(srng.integers(len(freq_list)))]
    n_anom = int(srng.choice([0, 1, 2, 3, 4], p=[0.05, 0.3, 0.35, 0.2, 0.1]))
    n_anom = min(n_anom, max(1, n // 400))  # short series: room for each window
    counter = hard and i % COUNTER_EVERY == 1
    pool = COUNTER_KINDS if counter else HARD_KINDS if hard else KINDS
    kinds = [_deal(rng, decks, pool) for _ in range(n_anom)]
    irregular = HARD_IRREGULARITIES if hard else IRREGULARITIES
    cycle = len(irregular) + 1  # the last slot of each cycle forces nothing
    forced = irregular[i % cycle] if i % cycle < len(irregular) else None
    if hard:
        df, windows, feats = _make_hard_series(srng, n, interval, forced, kinds, counter)
    else:
        df, windows, feats = _make_series(srng, n, interval, forced, kinds)
    folder = FREQS[interval]
    rel = (
        f"{folder}/site_{i % 4}/series_{i:03d}.csv"
        if i % 3 == 2
        else f"{folder}/series_{i:03d}.csv"
    )
    return rel, df, SeriesInfo(rel, n, interval, windows, feats)


def generate_corpus(
    out_dir: Path,
    n_series: int,
    total_rows: int,
    seed: int,
    min_rows: int = 1000,
    max_rows: int = 25000,
    profile: str = "standard",
) -> CorpusInfo:
    """Write ``n_series`` labelled series totalling exactly ``total_rows`` rows (each between
    ``min_rows`` and ``max_rows``) under ``out_dir``; the same arguments give the same bytes.

    ``profile`` is ``"standard"`` or ``"hard"`` (see the module docstring).

    Coverage is guaranteed for small corpora: series ``i`` always has irregularity
    ``IRREGULARITIES[i % 6]`` (none for ``i % 6 == 5``; hard: ``HARD_IRREGULARITIES[i % 7]``,
    none for ``i % 7 == 6``) plus random others, and anomaly kinds are dealt from shuffled
    decks of all the kinds (hard: one deck for measurements, one for counters)."""
    if profile not in PROFILES:
        raise ConfigError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    rng = np.random.default_rng([seed, 7001])
    counts = _row_counts(rng, n_series, total_rows, min_rows, max_rows)
    decks: dict[str, list[str]] = {}
    frames: list[tuple[str, pd.DataFrame]] = []
    series: list[SeriesInfo] = []
    for i, n in enumerate(counts.tolist()):
        rel, df, entry = _one_series(rng, decks, i, n, seed, profile == "hard")
        frames.append((rel, df))
        series.append(entry)
    params = {
        "n_series": n_series,
        "total_rows": total_rows,
        "seed": seed,
        "min_rows": min_rows,
        "max_rows": max_rows,
        "profile": profile,
    }
    return _write(out_dir, frames, series, seed, "generated", params)
