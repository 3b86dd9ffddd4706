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


def test_a_lasting_departure_is_accepted_as_the_new_normal() -> None:
    ch = run([LR - 5] * 40, EpisodePolicy(close_after=5, accept_after=20))
    assert ch[0] is Change.OPENED and ch[19] is Change.ACCEPTED
    assert ch[20] is Change.OPENED  # the channels must relearn; the engine test covers that
    assert Change.CLOSED not in ch


def test_episode_id_is_stable() -> None:
    ep = Episode()
    ep.step(Onset(1234, 1.0), LR - 1, 0.7, ("residual",), LR, EpisodePolicy())
    assert ep.id("pump-1/temperature") == "pump-1/temperature@1234"
    assert ep.channels == {"residual"}
