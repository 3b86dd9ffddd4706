"""Marker bundles used across test modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def slow_integration(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A test on the real services that takes a while (``-m "not slow"`` skips it locally)."""
    return pytest.mark.slow(pytest.mark.integration(fn))
