"""Process bookkeeping for the embedded stack: which processes belong to a service, stopping
all of them, and the lock that keeps two `stack up`/`down` from working on one state dir.

A service's processes are found by a marker in their environment (``OWNER_ENV`` = the
service's directory), which every child inherits: MLflow's uvicorn and job-runner children
survive a SIGKILL of their parent and keep its port, and only the marker still ties them to
the stack once the parent, and with it the pid file's meaning, is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil

from iot_mlops.errors import ServiceError

OWNER_ENV = "IOT_MLOPS_STACK_SERVICE"


def owned_processes(owner: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``OWNER_ENV=owner`` (this one excluded)."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(OWNER_ENV) == owner and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:  # gone meanwhile, or another user's process
            continue
    return found


def terminate(procs: list[psutil.Process], group: int | None, timeout: float) -> list[int]:
    """SIGTERM the process group and each process, wait up to ``timeout`` seconds, then
    SIGKILL whatever is left. Returns the pids that were alive."""
    if group is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=10)
    return [p.pid for p in procs]


@contextlib.contextmanager
def stack_lock(root: Path, command: str) -> Iterator[None]:
    """Hold an exclusive lock on ``root`` for one `stack up`/`down`; a second one at the same
    time fails at once with a message instead of racing on formatting and pid files."""
    path = root / "run" / "stack.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise ServiceError(
                f"cannot run `stack {command}`: {holder} is already starting or stopping "
                f"the stack in {root}",
                fix="wait for it to finish, then check with `iot-mlops stack status`",
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"`iot-mlops stack {command}` (pid {os.getpid()})")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
