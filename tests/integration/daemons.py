"""The daemons as their own processes, for the hardening tests: `cortex serve` as the README
starts it, the neuron's own `serve` (config loader, signals, drain) on its fake engine, and the
gateway's test double. Each logs to a file the test reads afterwards (tracebacks, leaked keys).

Run as a script, this module is the process: ``daemons.py neuron -c neuron.toml`` or
``daemons.py double --token T --loaded org/a org/b``; ``daemons.py tiny-model DIR`` makes the
demo's model id there as a fake model (the demo test's stand-in for `neuron tiny-model`).
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

import httpx

from cortex_neuron.testing import fake_model

NEURON_TOKEN = "neuron-token"
DOUBLE_TOKEN = "double-token"
KEYS = {"client": "client-key", "admin": "admin-key", "wrong": "wrong-key-presented"}

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
    env: dict[str, str]

    def text(self) -> str:
        """Its log so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, signum: int = signal.SIGTERM, within: float = 30) -> int:
        """Signal it and wait for its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(within)


def spawn(kind: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> Daemon:
    """Start ``kind`` (gateway, neuron, double) and return once its log says where it listens;
    ``env``: variables added to its environment."""
    script = ["-m", "cortex_cli", "serve"] if kind == "gateway" else [__file__, kind]
    start = log.stat().st_size if log.exists() else 0  # a restart appends to the same log
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, *script, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},  # noqa: TID251 - the daemon's, passed on
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if match := _LISTENING[kind].search(log.read_bytes()[start:].decode(errors="replace")):
            return Daemon(process, match[1], match[2], log, env or {})
        if process.poll() is not None:
            break
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"{kind} did not start: {log.read_text(errors='replace')}")


def gateway_args(config: Path) -> list[str]:
    """`cortex serve`'s flags: the config, free loopback ports."""
    return ["--config", str(config), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]


@dataclass
class Stack:
    """The daemons of :func:`serving_stack`; a test may kill and restart them."""

    root: Path
    gateway: Daemon
    neuron: Daemon
    double: Daemon

    def start_neuron(self) -> None:
        """(Re)start the neuron on the port it had (the gateway's config names it)."""
        self.neuron.process.wait(15)  # the old one has exited (killed or stopped)
        port = self.neuron.url.rsplit(":", 1)[1]
        self.neuron = spawn(
            "neuron",
            ["-c", str(self.root / "neuron.toml"), "--port", port],
            self.root / "neuron.log",
            self.neuron.env,
        )

    def start_gateway(self) -> None:
        """(Re)start `cortex serve` (new ports) and wait until it lists both nodes' models."""
        self.gateway = spawn(
            "gateway", gateway_args(self.root / "cortex.toml"), self.root / "gateway.log"
        )
        _wait_for_models(self.gateway.url, {"org/a", "org/b"})

    def stop(self) -> None:
        """Stop every daemon still running (SIGKILL if SIGTERM is not enough)."""
        for daemon in (self.gateway, self.neuron, self.double):
            try:
                daemon.stop(within=15)
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                daemon.process.wait()


def _model_dir(root: Path) -> Path:
    """`org/a`, `org/b`, and links a client must not be able to load through."""
    models = root / "models"
    for model_id in ("org/a", "org/b"):
        fake_model(models, model_id)
    outside = fake_model(root / "elsewhere", "org/secret")
    (models / "org" / "linked").symlink_to(outside)
    (models / "org" / "config-linked").mkdir()
    (models / "org" / "config-linked" / "config.json").symlink_to(outside / "config.json")
    (models / "escape").symlink_to(outside.parent)
    (models / "org" / "empty").mkdir()
    return models


@contextmanager
def serving_stack(root: Path, token_delay: float = 0.0) -> Iterator[Stack]:
    """One `cortex serve` (keys configured) over two nodes: the gateway's test double (d1,
    `org/a` loaded) and the neuron's own serve on its fake engine (n1, `org/b` preloaded, each
    token ``token_delay`` seconds)."""
    (root / "neuron.toml").write_text(
        f'host = "127.0.0.1"\nport = 0\nauth_token = "{NEURON_TOKEN}"\n'
        f'[harness.vllm]\nmodel_dirs = ["{_model_dir(root)}"]\nhf_cache = "{root / "hf"}"\n'
        "cpu_memory_mb = 4000\ndefault_memory_mb = 500\n"
        '[[default_models]]\nmodel_id = "org/b"\n',
        encoding="utf-8",
    )
    env = {"FAKE_TOKEN_DELAY": str(token_delay)}
    neuron = spawn("neuron", ["-c", str(root / "neuron.toml")], root / "neuron.log", env)
    double = spawn("double", ["--token", DOUBLE_TOKEN, "--loaded", "org/a"], root / "double.log")
    (root / "models.toml").write_text(
        '[[models]]\nid = "org/a"\n[[models]]\nid = "org/b"\n', encoding="utf-8"
    )
    (root / "cortex.toml").write_text(
        'models_config = "models.toml"\n'
        "[gateway]\npoll_interval_s = 0.2\nmax_body_bytes = 65536\n"
        f"[auth]\napi_keys = ['{KEYS['client']}']\nadmin_keys = ['{KEYS['admin']}']\n"
        f'[[neurons]]\nname = "n1"\nendpoint = "{neuron.url}"\ntoken = "{NEURON_TOKEN}"\n'
        f'[[neurons]]\nname = "d1"\nendpoint = "{double.url}"\ntoken = "{DOUBLE_TOKEN}"\n',
        encoding="utf-8",
    )
    stack = Stack(root, double, neuron, double)  # the gateway's place, until it starts
    try:
        stack.start_gateway()
        yield stack
    finally:
        stack.stop()


def _wait_for_models(url: str, wanted: set[str]) -> None:
    headers = {"Authorization": f"Bearer {KEYS['client']}"}
    for _ in range(500):
        listed = httpx.get(url + "/v1/models", headers=headers).json()["data"]
        loaded = {m["id"] for m in listed if {"loaded"} & {s["status"] for s in m["locations"]}}
        if wanted <= loaded:
            return
        httpx.get(url + "/health")  # a short pause that also proves the gateway answers
    raise AssertionError(f"the gateway never listed {wanted} loaded")


def _neuron(config: Path, port: int | None) -> None:
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

    overrides = {} if port is None else {"port": port}
    neuron = load(NeuronConfig, config, env_prefix="NEURON", overrides=overrides)
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
    parser.add_argument("kind", choices=["neuron", "double", "tiny-model"])
    parser.add_argument("dir", nargs="?", type=Path)
    parser.add_argument("-c", "--config", type=Path)
    parser.add_argument("--port", type=int)
    parser.add_argument("--token", default="")
    parser.add_argument("--models", nargs="*", default=[])
    parser.add_argument("--loaded", nargs="*", default=[])
    ns = parser.parse_args()
    if ns.kind == "neuron":
        _neuron(ns.config, ns.port)
    elif ns.kind == "tiny-model":
        fake_model(ns.dir, "cortex/tiny-chat")
    else:
        asyncio.run(_double(ns.token, ns.models, ns.loaded))
