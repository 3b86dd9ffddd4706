"""The training profile behind the input-drift alert (model/profile.py): pure."""

from __future__ import annotations

import numpy as np
import pytest

from iot_mlops.model import profile

pytestmark = pytest.mark.unit


def test_deciles_split_training_values_evenly_and_ignore_gaps() -> None:
    rng = np.random.default_rng(1)
    values = np.r_[rng.normal(20, 2, 10_000), [np.nan] * 50]
    (p,) = profile.build({"temperature": values}).values()
    assert len(p["edges"]) == 9 and p["edges"] == sorted(p["edges"])
    assert sum(p["shares"]) == pytest.approx(1.0)
    assert all(abs(s - 0.1) < 0.01 for s in p["shares"])
    assert profile.bin_of(p["edges"], -1e9) == 0 and profile.bin_of(p["edges"], 1e9) == 9


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(2)
    (p,) = profile.build({"m": rng.normal(0, 1, 20_000)}).values()

    def counts(sample: np.ndarray) -> list[float]:
        c = [0.0] * len(p["shares"])
        for v in sample:
            c[profile.bin_of(p["edges"], v)] += 1
        return c

    same = profile.psi(p["shares"], counts(rng.normal(0, 1, 5_000)))
    shifted = profile.psi(p["shares"], counts(rng.normal(1.5, 1, 5_000)))
    assert same < 0.02 and shifted > 0.25
    assert profile.psi(p["shares"], [0.0] * len(p["shares"])) == 0.0  # nothing seen yet


def test_constant_series_metric_names_and_the_cap() -> None:
    (p,) = profile.build({"stuck": [5.0] * 100}).values()
    assert p["edges"] == [5.0] and p["shares"] == [0.0, 1.0]  # one edge: below / from it
    assert profile.metric_of("pump-1/temperature") == "temperature"
    assert profile.metric_of("a/b%2Fc") == "b%2Fc"  # as events.series_id encodes it
    many = {f"m{i}": np.arange(i + 1.0) for i in range(profile.MAX_METRICS + 10)}
    kept = profile.build(many)
    assert len(kept) == profile.MAX_METRICS and "m0" not in kept  # the most values win
    assert profile.build({"empty": [np.nan]}) == {}
