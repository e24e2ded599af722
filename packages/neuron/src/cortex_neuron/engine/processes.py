"""The engine's processes: started in a process group of their own, quick to exit, reaped.

vLLM's engine core and its worker are spawned through ``multiprocessing``; started in a new
process group, a Ctrl-C to the terminal's group reaches only the neuron, which drains and stops
them itself (DESIGN §3). Each runs :func:`spawn_main` in place of multiprocessing's own: once
vLLM's teardown has run, it leaves without the interpreter's finalization, which costs ~2.5 s
here in a process that imported torch and vLLM and is paid twice in a row (the worker, then the
engine core), long enough that vLLM's 5 s wait for its engine core ran out on a busy machine.
An unload or a shutdown returns only once they are gone: what has not exited in time is
killed. Needs psutil (the neuron's engine extras).
"""

import atexit
import contextlib
import logging
import multiprocessing.spawn
import multiprocessing.util
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psutil

__all__ = ["Take", "alive", "cmdline", "own_process_group", "reap", "spawn_main"]

logger = logging.getLogger(__name__)


Take = Callable[[bytes, Sequence[str | bytes], Sequence[int]], int | None]
"""Serves a spawn (multiprocessing's path, arguments, fds to pass) with a process already
running and returns its pid, or ``None`` to spawn afresh (a warm spare's ``take``)."""

_PARENT_POLL_S = 1.0
_MULTIPROCESSING_ENTRY = "from multiprocessing.spawn import spawn_main; spawn_main("
_ENTRY = f"from {__name__} import spawn_main; spawn_main("


@contextlib.contextmanager
def own_process_group(take: Take | None = None) -> Iterator[None]:
    """Spawn the processes multiprocessing starts meanwhile in a new process group.

    ``take`` may serve a spawn with a warm spare (whose group is already its own).
    """
    original = multiprocessing.util.spawnv_passfds
    multiprocessing.util.spawnv_passfds = _spawner(new_group=True, take=take)
    try:
        yield
    finally:
        multiprocessing.util.spawnv_passfds = original


def spawn_main(take: Take | None = None, **kwargs: Any) -> None:
    """A spawned engine process: multiprocessing's entry, then an exit without finalization.

    What the process started runs to its end as usual, multiprocessing's finalizers included,
    and so do the ``atexit`` handlers (logging's flush among them); only the interpreter's
    teardown of its modules is skipped. Its own children (vLLM's worker) exit the same way, and
    ``take`` may serve their spawn with a spare. It dies with its parent: an engine core whose
    neuron was killed would otherwise spin on, orphaned, holding its memory (vLLM's does).
    """
    _die_with_parent()
    multiprocessing.util.spawnv_passfds = _spawner(new_group=False, take=take)
    try:
        multiprocessing.spawn.spawn_main(**kwargs)
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    atexit._run_exitfuncs()
    if code is not None and not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code or 0)


def _die_with_parent() -> None:
    """Exit once this process's parent is gone (it is then adopted by another)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _spawner(*, new_group: bool, take: Take | None) -> Any:
    """A stand-in for multiprocessing's ``spawnv_passfds`` that enters :func:`spawn_main`."""

    def spawn(path: bytes, args: list[str | bytes], passfds: Sequence[int]) -> int:
        # multiprocessing hands the executable as bytes, the code to run as a string
        args = [_entered(arg) for arg in args]
        if take is not None and (pid := take(path, args, passfds)) is not None:
            return pid
        fds = sorted(set(map(int, passfds)))
        for fd in fds:
            os.set_inheritable(fd, True)
        try:
            # the child gets this process's environment, as multiprocessing would give it
            if new_group:
                return os.posix_spawn(path, args, os.environ, setpgroup=0)  # noqa: TID251
            return os.posix_spawn(path, args, os.environ)  # noqa: TID251
        finally:
            for fd in fds:
                os.set_inheritable(fd, False)

    return spawn


def _entered(arg: str | bytes) -> str | bytes:
    return arg.replace(_MULTIPROCESSING_ENTRY, _ENTRY) if isinstance(arg, str) else arg


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
