"""Which versions held an alias, in order: what `promote --rollback` returns to. Pure; the
registry keeps the list as a tag of the registered model (``alias_history.<alias>``), since
MLflow keeps no history of its aliases."""

from __future__ import annotations

import json

KEEP = 50  # versions remembered per alias


def tag_key(alias: str) -> str:
    return f"alias_history.{alias}"


def parse(raw: str | None) -> list[str]:
    """The stored list; anything unreadable counts as no history (never a crash)."""
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def render(history: list[str]) -> str:
    return json.dumps(history[-KEEP:])


def promoted(history: list[str], current: str | None, version: str) -> list[str]:
    """The history after ``version`` takes the alias from ``current``."""
    out = list(history)
    if current is not None and (not out or out[-1] != current):
        out.append(current)  # set before history was kept, or moved by hand (MLflow's UI)
    if out[-1:] != [version]:
        out.append(version)
    return out[-KEEP:]


def rolled_back(history: list[str], current: str) -> tuple[str | None, list[str]]:
    """(the version before ``current``, the history without ``current``'s turn); None when
    no other version held the alias."""
    out = list(history)
    while out and out[-1] == current:
        out.pop()
    return (out[-1] if out else None), out
