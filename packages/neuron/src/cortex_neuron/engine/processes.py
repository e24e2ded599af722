"""The engine's processes: started in a process group of their own, watched, and reaped.

vLLM's engine core and its worker are spawned through ``multiprocessing``; started in a new
process group, a Ctrl-C to the terminal's group reaches only the neuron, which drains and stops
them itself (DESIGN §3). An unload or a shutdown returns only once they are gone: what has not
exited in time is killed. Needs psutil (the neuron's engine extras).
"""

import contextlib
import logging
import multiprocessing.util
import os
from collections.abc import Iterator
from typing import Any

import psutil

__all__ = ["alive", "cmdline", "own_process_group", "reap"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def own_process_group() -> Iterator[None]:
    """Spawn the processes multiprocessing starts meanwhile in a new process group."""
    original = multiprocessing.util.spawnv_passfds

    def spawn(path: str, args: list[str], passfds: Any) -> int:
        fds = sorted(set(map(int, passfds)))
        for fd in fds:
            os.set_inheritable(fd, True)
        try:
            # the child gets this process's environment, as multiprocessing would give it
            return os.posix_spawn(path, args, os.environ, setpgroup=0)  # noqa: TID251
        finally:
            for fd in fds:
                os.set_inheritable(fd, False)

    multiprocessing.util.spawnv_passfds = spawn  # type: ignore[assignment]
    try:
        yield
    finally:
        multiprocessing.util.spawnv_passfds = original


def cmdline(process: psutil.Process) -> list[str]:
    """The process's command line; empty when it cannot be read."""
    try:
        return list(process.cmdline())
    except psutil.Error:
        return []


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def reap(pids: list[int], seconds: float) -> None:
    """Wait for ``pids`` to exit; kill what is left after ``seconds``."""
    processes = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            processes.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(processes, timeout=seconds)
    for process in alive:
        logger.warning("engine process %d did not exit; killing it", process.pid)
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
