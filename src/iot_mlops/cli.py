"""The ``iot-mlops`` command line. Exit codes: 0 ok, 1 failure, 2 bad usage or input."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from iot_mlops.config import Settings
from iot_mlops.errors import IotMlopsError

console = Console(stderr=True)
out = Console()

app = typer.Typer(
    help="Real-time anomaly detection for IoT sensor streams (Kafka, AutoGluon, MLflow).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(
    help="The embedded local stack: Kafka, MLflow, Prometheus.", no_args_is_help=True
)
app.add_typer(stack_app, name="stack")

F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn our errors (and Ctrl-C) into a message and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IotMlopsError as e:
            console.print(f"[bold red]error:[/] {e.message}", highlight=False)
            if e.fix:
                console.print(f"[yellow]fix:[/] {e.fix}", highlight=False)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


StateDir = typer.Option(None, "--state-dir", help="State directory [env IOT_MLOPS_STATE_DIR]")


def settings_from(**overrides: Any) -> Settings:
    return Settings().with_overrides(**overrides)


@stack_app.command("up")
@friendly
def stack_up(
    state_dir: Path | None = StateDir,
    partitions: int | None = typer.Option(
        None,
        "--partitions",
        min=1,
        help="Partitions of the topics [env IOT_MLOPS_INPUT_PARTITIONS]",
    ),
    prometheus: bool = typer.Option(True, help="Start Prometheus when it is installed."),
) -> None:
    """Start Kafka, MLflow (and Prometheus), wait until healthy, create the topics."""
    from iot_mlops.stack import Stack

    s = settings_from(state_dir=state_dir, input_partitions=partitions)
    stack = Stack(s, with_prometheus=prometheus)
    with console.status("starting the stack…"):
        statuses = stack.up(on_event=lambda m: console.print(f"  {m}"))
    _print_status(statuses)


@stack_app.command("down")
@friendly
def stack_down(state_dir: Path | None = StateDir) -> None:
    """Stop the processes that `stack up` started (data is kept)."""
    from iot_mlops.stack import Stack

    stopped = Stack(settings_from(state_dir=state_dir)).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack_app.command("status")
@friendly
def stack_status(state_dir: Path | None = StateDir) -> None:
    """Show each service, its pid, port and health. Exit 1 when one is down."""
    from iot_mlops.stack import Stack

    statuses = Stack(settings_from(state_dir=state_dir)).status()
    _print_status(statuses)
    core = [st for st in statuses if st.name != "prometheus"]
    if not all(st.healthy for st in core):
        raise typer.Exit(1)


def _print_status(statuses: list[Any]) -> None:
    table = Table(title="iot-mlops stack")
    for col in ("service", "pid", "port", "health", "url", "log"):
        table.add_column(col)
    for st in statuses:
        health = (
            "[green]healthy[/]"
            if st.healthy
            else "[yellow]unhealthy[/]"
            if st.running
            else "[red]stopped[/]"
        )
        table.add_row(st.name, str(st.pid or "-"), str(st.port), health, st.url, str(st.log))
    out.print(table)


def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
