"""The common grid of ``evaluate`` (pure).

The model needs one frequency, but files range from 1 s to 1 h and may be irregular. Each
file (all its metrics share its timestamps) is mapped onto a synthetic regular grid at
``GRID_FREQ`` (1 minute):

* its own step is estimated from its training rows (at least ``MIN_STEP_ROWS`` rows) by
  ``estimate_grid`` (phase coherence around the median step, polished by least squares, snapped
  to a nominal interval), so sampling jitter does not turn a small error of the step into a
  drift of many steps over a long series; the phase is fitted too, because the first reading
  itself may be jittered;
* each row's grid index is ``k = round((t - phase) / step)`` and its synthetic time is
  ``GRID_EPOCH + k * 1 min``.

So jittered sampling lands on its grid steps; dropped points and outages become gaps (NaN in
the model's context, which the detector fills); a repeated timestamp becomes a second reading
for the same grid step (a *duplicate*); a backward clock jump becomes readings for steps that
were already seen (*late*). The detector never scores duplicate or late readings twice: they
get ``anomaly_score`` 0 and no onset in the output, like rows the detector dead-letters (a
non-numeric value). Training uses the same rule: only training rows whose grid index is beyond
every earlier one (what the detector itself feeds its context).

Timestamps in the output are the input's text; the synthetic grid exists only inside Kafka.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from iot_mlops.errors import ConfigError

GRID_FREQ = "1min"
GRID_STEP_NS = 60 * 1_000_000_000
# Far from 1970 so that clock jumps before a series' start still map to valid times.
GRID_EPOCH_NS = pd.Timestamp("2000-01-03T00:00:00Z").value
# Synthetic times must stay inside the reading schema's range (1970..2200).
MAX_GRID_INDEX = 100 * 365 * 24 * 60
MIN_GRID_INDEX = -25 * 365 * 24 * 60
MIN_STEP_ROWS = 16  # rows used to estimate a step at least, even if the probation is shorter
DEVICE_TYPE = "evaluation"  # the device_type of every evaluation reading


def synthetic_ms(grid: np.ndarray) -> np.ndarray:
    """Synthetic epoch milliseconds of grid indices."""
    return (GRID_EPOCH_NS + grid * GRID_STEP_NS) // 1_000_000


def grid_index_of_ms(t_ms: int) -> int:
    """The grid index of a synthetic time (inverse of ``synthetic_ms``)."""
    return round((int(t_ms) * 1_000_000 - GRID_EPOCH_NS) / GRID_STEP_NS)


def place_on_grid(ts_ns: np.ndarray, fit_rows: int, path: Path) -> tuple[float, float, np.ndarray]:
    """(step, phase, grid index per row) of one file, the step fitted on its first
    ``fit_rows`` rows (at least ``MIN_STEP_ROWS``)."""
    step, phase = estimate_grid(ts_ns, max(fit_rows, MIN_STEP_ROWS))
    grid = np.rint((ts_ns - phase) / step)
    if grid.max() > MAX_GRID_INDEX or grid.min() < MIN_GRID_INDEX:
        raise ConfigError(
            f"{path}: the series spans {int(grid.max() - grid.min()):,} of its own steps "
            f"({step / 1e9:g} s), more than the evaluation grid holds"
        )
    return step, phase, grid.astype(np.int64)


def _coherence(x: np.ndarray, freqs: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``|mean(exp(2 pi i f x))|`` per frequency: 1 when every point sits on a grid of step
    ``1/f``, near 0 when the points are spread over the phases of that grid."""
    out = np.empty(len(freqs))
    for a in range(0, len(freqs), chunk):
        ph = np.outer(freqs[a : a + chunk], x)
        out[a : a + chunk] = np.hypot(
            np.cos(2 * np.pi * ph).mean(1), np.sin(2 * np.pi * ph).mean(1)
        )
    return out


def estimate_grid(ts_ns: np.ndarray, n_fit: int) -> tuple[float, float]:
    """(step, phase) in ns of a series' own sampling grid ``t = phase + k * step``, from its
    first ``n_fit`` rows.

    The median positive difference is only a first guess: with jitter of up to ±40 % of a step
    it is a few per cent off, which over thousands of steps is many steps of drift, and rounding
    to a wrong step locks onto an alias (60 steps read as 61). So the step is the frequency of
    maximal phase coherence (the Rayleigh / epoch-folding periodogram) near the guess, coarse on
    a prefix and then fine on every row, polished by least squares of the timestamps on their
    step numbers, and snapped to a nominal interval when indistinguishable from one. The range
    searched (0.45 to 1.3 times the guess) also finds the step of a series that misses every
    other reading."""
    base = int(ts_ns[0])
    x = (ts_ns[: max(n_fit, 2)] - base).astype(np.float64) / 1e9  # seconds
    d = np.diff(x)
    d = d[d > 0]
    if not len(d):
        # One timestamp only (or all equal): any step works, every row is one grid point.
        return float(GRID_STEP_NS), float(base)
    f0 = 1.0 / float(np.median(d))
    span = float(x.max() - x.min())
    if len(d) < 4 or span <= 0:
        return 1e9 / f0, float(base)
    # Coarse: a prefix, bins of a quarter of the prefix's peak width.
    pre = x[:256]
    pspan = max(float(pre.max() - pre.min()), 1.0 / f0)
    coarse = np.arange(0.45 * f0, 1.3 * f0, 1.0 / (4.0 * pspan))
    fc = float(coarse[np.argmax(_coherence(pre, coarse))])
    # Fine: every row, around the coarse peak.
    fine = np.arange(fc - 1.0 / pspan, fc + 1.0 / pspan, 1.0 / (16.0 * span))
    fine = fine[fine > 0]
    coh = _coherence(x, fine)
    f = float(fine[np.argmax(coh)])
    z = np.exp(2j * np.pi * f * x).mean()
    phase = float(np.angle(z)) / (2 * np.pi * f)  # x = phase + k / f
    step = 1.0 / f
    step, phase, sigma = _polish(x, step, phase)
    step, phase = _snap_to_nominal(x, step, phase, sigma)
    # Put step 0 at the first row, so every series starts at the grid epoch.
    phase += round((x[0] - phase) / step) * step
    return step * 1e9, base + phase * 1e9


def _polish(x: np.ndarray, step: float, phase: float) -> tuple[float, float, float]:
    """Least squares of the timestamps on their rounded step numbers (exact on a regular
    series): (step, phase, standard error of the step)."""
    sigma = math.inf
    for _ in range(2):
        k = np.rint((x - phase) / step)
        if len(np.unique(k)) < 3:
            break
        s_new, p_new = np.polyfit(k, x, 1)
        if not (s_new > 0 and abs(s_new - step) <= 0.01 * step):
            break
        step, phase = float(s_new), float(p_new)
        resid = x - (phase + step * k)
        sigma = float(np.sqrt((resid**2).sum() / (len(x) - 2) / ((k - k.mean()) ** 2).sum()))
    return step, phase, sigma


def _snap_to_nominal(x: np.ndarray, step: float, phase: float, sigma: float) -> tuple[float, float]:
    """Sensors sample at nominal intervals (whole seconds, or whole milliseconds below one
    second). When the fit cannot tell the step from the nominal one (within 3 standard
    errors), take the nominal one: extrapolated from the probation over a series several
    times longer, even a 1e-4 error of a jittered fit is a drift of a large part of a step."""
    unit = 1.0 if step >= 1.0 else 1e-3
    nominal = round(step / unit) * unit
    if nominal > 0 and abs(step - nominal) <= max(3 * sigma, 1e-9 * step):
        k = np.rint((x - phase) / nominal)
        phase = float(np.mean(x - nominal * k))
        step = nominal
    return step, phase
