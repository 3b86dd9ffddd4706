"""Labelled evaluation corpora in the ``evaluate`` format, deterministic for a seed: how they
are made is the docstring of ``corpus.spec`` (also written into every manifest)."""

from iot_mlops.evaluation.corpus.files import generate_corpus
from iot_mlops.evaluation.corpus.simulated import simulator_corpus
from iot_mlops.evaluation.corpus.spec import (
    ALL_KINDS,
    COUNTER_KINDS,
    FIRST_ONSET,
    FREQS,
    HARD_IRREGULARITIES,
    HARD_KINDS,
    IRREGULARITIES,
    KINDS,
    PERSISTENT_KINDS,
    PROFILES,
    SIM_START_MS,
    CorpusInfo,
    LabelWindow,
    SeriesInfo,
)

__all__ = [
    "ALL_KINDS",
    "COUNTER_KINDS",
    "FIRST_ONSET",
    "FREQS",
    "HARD_IRREGULARITIES",
    "HARD_KINDS",
    "IRREGULARITIES",
    "KINDS",
    "PERSISTENT_KINDS",
    "PROFILES",
    "SIM_START_MS",
    "CorpusInfo",
    "LabelWindow",
    "SeriesInfo",
    "generate_corpus",
    "simulator_corpus",
]
