"""SKAB, the real labelled corpus, read in place from ``../shared/datasets/skab`` (never copied
into the repository). A missing folder fails the tests that need it, with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

SKAB = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "skab"


@pytest.fixture(scope="session")
def skab_data() -> Path:
    data = SKAB.resolve() / "data"
    if not (data / "valve1" / "0.csv").is_file():
        pytest.fail(
            f"SKAB is not at {SKAB} (expected data/valve1/0.csv there): these tests read the "
            "real corpus from ../shared/datasets/skab next to the repository; put it there "
            "(the public repository waico/SKAB, its data/ folder)",
            pytrace=False,
        )
    return data
