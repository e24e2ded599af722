"""The warm spare: an interpreter that has imported vLLM, waiting to become an engine process.

A cold engine start spawns vLLM's engine core, which spawns its worker, and each fresh
interpreter first imports torch and vLLM (~10 s each here) before any model work. A spare pays
that ahead of the load: it is spawned with multiprocessing's own command line, imports what its
role needs, starts the spare of its own child (the engine core's worker), says it is ready and
waits on a socket. When multiprocessing spawns an engine process, :meth:`Spare.take` hands the
spare what the spawn would have handed a new process (the file descriptors, by ``SCM_RIGHTS``,
the environment and working directory of that moment) and returns the spare's pid, so that
multiprocessing waits on it as on its own child; the spare then runs multiprocessing's entry
(:func:`cortex_neuron.engine.processes.spawn_main`) exactly as a fresh process would. The
descriptors must land at the numbers they have in the parent, as inheritance would place them
(multiprocessing pickles pipes by number): the spare keeps its own above ``_OWN_FDS`` and
refuses a handover whose numbers it already uses, and the spawn then goes cold.

A spare is a child of the process that will spawn through it, so the engine core's is the
neuron's and the worker's is the engine core's. Each role names the variables its spawn will
add to the environment (vLLM binds its CPU worker's OpenMP threads by variables set around the
worker's spawn), and a spare starts under them. It serves one spawn; one that is dead, not
ready in time, or that started under other variables of those read only when a process starts
(``LD_PRELOAD``, OpenMP's) is passed over and the spawn goes cold: an engine from it would run,
slower (a worker whose OpenMP runtime had read no binding gave 0.6x the tokens/s). A spare whose
parent goes away reads the end of its socket and exits. Nothing here initialises CUDA: the
spare only imports.
"""

import contextlib
import fcntl
import importlib
import json
import logging
import multiprocessing.spawn
import os
import re
import select
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence

import psutil

from cortex_neuron.engine.processes import spawn_main

__all__ = ["CORE_MODULES", "WORKER_MODULES", "Role", "Spare", "Spares", "wait"]

logger = logging.getLogger(__name__)

CORE_MODULES = ("vllm.v1.engine.core", "vllm.v1.executor.multiproc_executor")
"""What vLLM's engine core imports before it can start."""

WORKER_MODULES = {
    "cpu": ("vllm.v1.executor.multiproc_executor", "vllm.v1.worker.cpu_worker"),
    "gpu": ("vllm.v1.executor.multiproc_executor", "vllm.v1.worker.gpu_worker"),
}
"""What vLLM's worker imports before it can load a model, by device kind."""

_READY_S = 180.0  # a spare still importing is waited for this long: it is ahead of a cold one
_ANSWER_S = 30.0
_OWN_FDS = 900  # the spare's own sockets live at or above this, out of the way of handed fds
_CHANNEL_FD = _OWN_FDS
_MESSAGE_BYTES = 1 << 20
_KWARGS = re.compile(r"spawn_main\(([^)]*)\)")
_AT_START = ("OMP_", "GOMP_", "KMP_")  # OpenMP runtimes read these once, when they load

Role = tuple[Sequence[str], Mapping[str, str]]
"""What a spare imports, and the variables its spawn will have added to the environment."""


def _read_at_start(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` that a process reads only as it starts."""
    return {k: v for k, v in env.items() if k == "LD_PRELOAD" or k.startswith(_AT_START)}


class Spare:
    """One spare process, from its start to the one spawn it serves (or its stop)."""

    def __init__(self, pid: int, channel: socket.socket, started: Mapping[str, str]) -> None:
        self.pid = pid
        self._channel = channel
        self._ready = False
        self._done = False
        self._started = _read_at_start(started)

    @classmethod
    def start(cls, roles: Sequence[Role], *, new_group: bool) -> "Spare":
        """Spawn a spare for ``roles[0]``, with its own spare for ``roles[1:]``, and so on."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours = _out_of_the_way(ours)
        env = {**os.environ, **roles[0][1]}  # noqa: TID251
        try:
            code = f"from {__name__} import wait; wait({json.dumps(roles)!r})"
            args = [_code(arg, code) for arg in multiprocessing.spawn.get_command_line()]
            path = multiprocessing.spawn.get_executable()
            actions = [(os.POSIX_SPAWN_DUP2, theirs.fileno(), _CHANNEL_FD)]
            if new_group:
                pid = os.posix_spawn(path, args, env, file_actions=actions, setpgroup=0)
            else:
                pid = os.posix_spawn(path, args, env, file_actions=actions)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return cls(pid, ours, env)

    def ready(self, seconds: float = 0.0) -> bool:
        """Whether the spare has imported what it needs (waiting up to ``seconds``)."""
        if not self._ready and not self._done:
            readable, _, _ = select.select([self._channel], [], [], seconds)
            if readable:
                self._ready = self._channel.recv(1) == b"R"
                if not self._ready:
                    self.stop()  # it died while importing
        return self._ready

    def pids(self) -> list[int]:
        """The spare's pid and those of its own spares (empty once it has served or stopped)."""
        if self._done:
            return []
        try:
            process = psutil.Process(self.pid)
            return [self.pid, *(p.pid for p in process.children(recursive=True))]
        except psutil.Error:
            return []

    def memory_mb(self) -> int:
        """What the spare and its own spares hold (resident memory)."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_info().rss
        return total // (1024 * 1024)

    def take(self, path: bytes, args: Sequence[str | bytes], passfds: Sequence[int]) -> int | None:
        """Become the process multiprocessing is spawning (its pid), or ``None`` to spawn cold.

        Only a spawn through multiprocessing's entry is served (not its resource tracker's).
        """
        match = next((m for a in args if isinstance(a, str) and (m := _KWARGS.search(a))), None)
        if match is None or self._done or not self._alive():
            return None
        if not self.ready(_READY_S):
            logger.warning("the warm spare was not ready in %.0f s; starting cold", _READY_S)
            self.stop()
            return None
        now = _read_at_start(os.environ)  # noqa: TID251
        differ = sorted(k for k in now.keys() | self._started if now.get(k) != self._started.get(k))
        if os.fsencode(path) != os.fsencode(multiprocessing.spawn.get_executable()):
            differ = ["the interpreter", *differ]
        if differ:
            logger.info("the warm spare started under other %s; starting cold", ", ".join(differ))
            self.stop()
            return None
        fds = sorted(set(map(int, passfds)))
        kwargs: dict[str, int | None] = {}
        for pair in filter(None, (p.strip() for p in match.group(1).split(","))):
            name, value = pair.split("=")
            kwargs[name] = None if value == "None" else int(value)
        message = {
            "kwargs": kwargs,
            "fds": fds,
            "cwd": os.getcwd(),
            "env": dict(os.environ),  # noqa: TID251
        }
        try:
            socket.send_fds(self._channel, [json.dumps(message).encode()], fds)
            readable, _, _ = select.select([self._channel], [], [], _ANSWER_S)
            accepted = bool(readable) and self._channel.recv(1) == b"Y"
        except OSError:
            accepted = False
        if not accepted:
            logger.warning("the warm spare refused the engine process; starting cold")
            self.stop()
            return None
        self._done = True
        self._channel.close()
        return self.pid

    def stop(self) -> None:
        """End the spare and its own spares (idle, they hold nothing worth keeping)."""
        if self._done:
            return
        self._done = True
        self._channel.close()
        processes = []
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(self.pid)
            processes = [*process.children(recursive=True), process]
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(processes, timeout=5)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, os.WNOHANG)

    def _alive(self) -> bool:
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid = self.pid  # not ours to wait for: then it is gone
        if pid == 0:
            return True
        self._done = True
        self._channel.close()
        return False


class Spares:
    """The neuron's spare for its next engine, within a memory budget: armed, taken, armed again.

    ``roles`` are the engine core's, then its worker's. A spare found holding more
    than ``budget_mb`` when a load comes is stopped and passed over. Armed again ``delay``
    seconds after a load, so that its imports do not slow the first tokens of the requests that
    waited for the load; a load that comes sooner arms it at once and waits for it.
    """

    def __init__(self, roles: Sequence[Role], budget_mb: int) -> None:
        self._roles = roles
        self._budget_mb = budget_mb
        self._spare: Spare | None = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._stopped = False

    def arm(self, delay: float = 0.0) -> None:
        """Start a spare (after ``delay``), unless one is waiting already."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._stopped:
                return
            if delay:
                self._timer = threading.Timer(delay, self.arm)
                self._timer.daemon = True
                self._timer.start()
                return
            if self._spare is not None and self._spare.pids():
                return
            try:
                self._spare = Spare.start(self._roles, new_group=True)
            except OSError as exc:  # e.g. a descriptor limit under _OWN_FDS
                logger.warning("no warm spare: %s", exc)
                self._spare = None

    def pids(self) -> set[int]:
        """The processes of the spare that waits (none once it has served)."""
        return set(self._spare.pids()) if self._spare is not None else set()

    def take(self, path: bytes, args: Sequence[str | bytes], passfds: Sequence[int]) -> int | None:
        """:meth:`Spare.take`, by the spare that waits, if it keeps within the budget."""
        if not any(isinstance(a, str) and _KWARGS.search(a) for a in args):
            return None  # multiprocessing's resource tracker, say
        self.arm()
        spare = self._spare
        if spare is None:
            return None
        if spare.ready() and (used := spare.memory_mb()) > self._budget_mb:
            logger.warning("the warm spare holds %d MiB, over its %d MiB", used, self._budget_mb)
            spare.stop()
            return None
        return spare.take(path, args, passfds)

    def stop(self) -> None:
        """Stop the spare that waits, and arm no other."""
        with self._lock:
            self._stopped = True
            if self._timer is not None:
                self._timer.cancel()
            if self._spare is not None:
                self._spare.stop()


def wait(roles_json: str) -> None:
    """The spare's own side: import, start the next spare, say ready, wait, become the process."""
    roles = json.loads(roles_json)
    channel = socket.socket(fileno=_CHANNEL_FD)
    started = time.monotonic()
    child = Spare.start(roles[1:], new_group=False) if len(roles) > 1 else None  # meanwhile
    for module in roles[0][0]:
        importlib.import_module(module)
    with contextlib.suppress(ImportError):
        # vLLM names its processes (VLLM::EngineCore) with it; it claims the memory of the
        # arguments and the environment at its first call, which must come before the
        # environment is replaced below, or every later title is lost
        title = importlib.import_module("setproctitle")
        title.setproctitle(title.getproctitle())
    logger.debug("spare ready in %.1f s", time.monotonic() - started)
    channel.sendall(b"R")
    try:
        message, fds, _, _ = socket.recv_fds(channel, _MESSAGE_BYTES, 16)
    except ConnectionResetError:  # the parent died
        message, fds = b"", []
    if not message:  # the parent went away
        if child is not None:
            child.stop()
        os._exit(0)
    order = json.loads(message)
    if not _place(fds, order["fds"]):
        channel.sendall(b"N")
        if child is not None:
            child.stop()
        os._exit(0)
    channel.sendall(b"Y")
    channel.close()
    os.chdir(order["cwd"])
    os.environ.clear()  # noqa: TID251
    os.environ.update(order["env"])  # noqa: TID251
    sys.argv[1:] = ["--multiprocessing-fork"]
    spawn_main(take=child.take if child is not None else None, **order["kwargs"])


def _place(received: list[int], numbers: list[int]) -> bool:
    """Move the ``received`` descriptors to ``numbers``, unless one of those is in use here."""
    if len(received) != len(numbers):
        return False
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _OWN_FDS + 10) for fd in received]
    for fd in received:
        os.close(fd)
    if any(_open(number) for number in numbers):
        return False
    for fd, number in zip(moved, numbers, strict=True):
        os.dup2(fd, number)  # inheritable, as a spawned process has them
        os.close(fd)
    return True


def _open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _out_of_the_way(sock: socket.socket) -> socket.socket:
    """``sock`` moved to a descriptor at or above ``_OWN_FDS``."""
    high = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, _OWN_FDS + 1)
    moved = socket.socket(fileno=high)
    sock.close()
    return moved


def _code(arg: str | bytes, code: str) -> str | bytes:
    """An argument of multiprocessing's command line, the spare's code in place of its entry."""
    return code if isinstance(arg, str) and arg.startswith("from multiprocessing") else arg
