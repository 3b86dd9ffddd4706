"""Episodes: one onset per departure, close after a normal run, re-open, accept a new level."""

from __future__ import annotations

import math

import pytest

from iot_mlops.scoring.episodes import Change, Episode, EpisodePolicy, Onset

pytestmark = pytest.mark.unit
LR = math.log(0.002)


def run(log_ps: list[float], policy: EpisodePolicy) -> list[Change]:
    ep = Episode()
    return [ep.step(Onset(i, 0.0), lp, 0.0, (), LR, policy) for i, lp in enumerate(log_ps)]


def test_one_onset_per_departure_then_close_then_reopen() -> None:
    rare, held, normal = LR - 1, 0.8 * LR, 0.0
    seq = [normal] * 3 + [rare, rare, held, normal, rare] + [normal] * 5 + [rare]
    ch = run(seq, EpisodePolicy(close_after=4, hold=0.75))
    assert ch.count(Change.OPENED) == 2  # the flicker inside the first departure is one episode
    assert ch[3] is Change.OPENED
    assert ch[11] is Change.CLOSED  # 4 ordinary readings after the last rare one
    assert ch[13] is Change.OPENED  # back to normal first, so a new onset


def test_a_lasting_departure_is_relearnt_then_accepted_as_the_new_normal() -> None:
    ch = run([LR - 5] * 40, EpisodePolicy(close_after=5, relearn_after=10, max_readings=20))
    assert ch[0] is Change.OPENED and ch[9] is Change.RELEARN and ch[19] is Change.ACCEPTED
    assert ch[:20].count(Change.RELEARN) == 1
    assert ch[20] is Change.OPENED  # the channels must relearn; the engine test covers that
    assert Change.CLOSED not in ch


def test_the_departure_holds_an_episode_whose_evidence_went_quiet() -> None:
    """After relearning, the series' own evidence is ordinary; the evidence against the
    pre-onset level (hold_log_p) keeps the episode open until that too is ordinary."""
    ep, policy, away = Episode(), EpisodePolicy(close_after=3, relearn_after=2), LR - 1
    seq = [(LR - 5, None)] + [(0.0, away)] * 20 + [(0.0, 0.0)] * 3
    ch = [ep.step(Onset(i, 0.0), lp, 0.0, (), LR, policy, h) for i, (lp, h) in enumerate(seq)]
    assert ch[0] is Change.OPENED and ch[1] is Change.RELEARN
    assert Change.CLOSED not in ch[:21] and ch[23] is Change.CLOSED
    # Without it, the same quiet evidence closes the episode after close_after readings.
    assert run([LR - 5] + [0.0] * 5, policy)[3] is Change.CLOSED


def test_episode_id_is_stable() -> None:
    ep = Episode()
    ep.step(Onset(1234, 1.0), LR - 1, 0.7, ("residual",), LR, EpisodePolicy())
    assert ep.id("pump-1/temperature") == "pump-1/temperature@1234"
    assert ep.channels == {"residual"}
