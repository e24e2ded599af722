"""The daemons as their own processes, for the hardening tests: `cortex serve` as the README
starts it, the neuron's own `serve` (config loader, signals, drain) on its fake engine, and the
gateway's test double. Each logs to a file the test reads afterwards (tracebacks, leaked keys).

Run as a script, this module is the process: ``daemons.py neuron -c neuron.toml`` or
``daemons.py double --token T --loaded org/a org/b``.
"""

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_LISTENING = {
    "gateway": re.compile(r"cortex gateway on (http://\S+), metrics on (http://\S+)/metrics"),
    "neuron": re.compile(r"listening on (http://\S+)()"),
    "double": re.compile(r"double on (http://\S+)()"),
}


@dataclass
class Daemon:
    """A daemon process: where it listens, and its log."""

    process: "subprocess.Popen[bytes]"
    url: str
    metrics_url: str
    log: Path

    def text(self) -> str:
        """Its log so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, signum: int = signal.SIGTERM, within: float = 30) -> int:
        """Signal it and wait for its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(within)


def spawn(kind: str, args: list[str], log: Path) -> Daemon:
    """Start ``kind`` (gateway, neuron, double) and return once its log says where it listens."""
    script = ["-m", "cortex_cli", "serve"] if kind == "gateway" else [__file__, kind]
    start = log.stat().st_size if log.exists() else 0  # a restart appends to the same log
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, *script, *args], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if match := _LISTENING[kind].search(log.read_bytes()[start:].decode(errors="replace")):
            return Daemon(process, match[1], match[2], log)
        if process.poll() is not None:
            break
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"{kind} did not start: {log.read_text(errors='replace')}")


@contextmanager
def running(kind: str, args: list[str], log: Path) -> Iterator[Daemon]:
    """:func:`spawn`, stopped (SIGKILL if SIGTERM is not enough) when the block ends."""
    daemon = spawn(kind, args, log)
    try:
        yield daemon
    finally:
        try:
            daemon.stop(within=15)
        except subprocess.TimeoutExpired:
            daemon.process.kill()
            daemon.process.wait()


def gateway_args(config: Path) -> list[str]:
    """`cortex serve`'s flags: the config, free loopback ports."""
    return ["--config", str(config), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]


def _neuron(config: Path) -> None:
    from cortex_core.config import NeuronConfig, load
    from cortex_core.logging import configure
    from cortex_neuron.app import build_context
    from cortex_neuron.engine.fake import FakeStarter
    from cortex_neuron.server import listen, serve

    class NoGpu:
        class NVMLError(Exception):
            pass

        def nvmlInit(self) -> None:
            raise self.NVMLError("no NVML on this test host")

    neuron = load(NeuronConfig, config, env_prefix="NEURON", overrides={})
    configure("INFO", "text")
    delay = float(os.environ.get("FAKE_TOKEN_DELAY", "0"))  # noqa: TID251 - the test's knob
    ctx = build_context(neuron, FakeStarter(token_delay=delay), nvml=NoGpu())
    asyncio.run(serve(ctx, listen(neuron)))


async def _double(token: str, models: list[str], loaded: list[str]) -> None:
    from cortex_gateway.testing import FakeNeuron

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with FakeNeuron([*models, *loaded], loaded=loaded, token=token) as fake:
        print(f"double on {fake.url}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["neuron", "double"])
    parser.add_argument("-c", "--config", type=Path)
    parser.add_argument("--token", default="")
    parser.add_argument("--models", nargs="*", default=[])
    parser.add_argument("--loaded", nargs="*", default=[])
    ns = parser.parse_args()
    if ns.kind == "neuron":
        _neuron(ns.config)
    else:
        asyncio.run(_double(ns.token, ns.models, ns.loaded))
