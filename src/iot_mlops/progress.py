"""The one progress style of long-running work (simulate, collect, train, evaluate): a rich
bar on stderr, and ``Reporter`` for work done in named phases (a transient bar per phase, then
a ✓ line with its duration)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(
    console: Console | None, *, enabled: bool = True, transient: bool = False
) -> Progress:
    """Spinner, description, bar, done/total, elapsed and remaining time; on stderr by
    default."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        disable=not enabled,
        transient=transient,
    )


class Reporter:
    """Phase progress for the CLI, silent when no console is given. ``timings`` holds each
    phase's duration in seconds."""

    def __init__(self, console: Any | None = None) -> None:
        self.console = console
        self.timings: dict[str, float] = {}
        self._progress: Progress | None = None
        self._task: Any = None

    @contextlib.contextmanager
    def phase(self, name: str, total: int | None = None) -> Iterator[Reporter]:
        t0 = time.perf_counter()
        if self.console is None:
            yield self
        else:
            with progress_bar(self.console, transient=True) as p:
                self._progress, self._task = p, p.add_task(name, total=total)
                try:
                    yield self
                finally:
                    self._progress = self._task = None
        self.timings[name] = time.perf_counter() - t0
        if self.console is not None:
            self.console.print(f"[green]✓[/] {name} [dim]({self.timings[name]:.1f} s)[/]")

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def note(self, msg: str) -> None:
        if self.console is not None:
            self.console.print(f"  {msg}", highlight=False)
