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


@dataclass
class Stack:
    gateway: Daemon
    neuron: Daemon
    double: Daemon


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
def serving_stack(root: Path) -> Iterator[Stack]:
    """One `cortex serve` (keys configured) over two nodes: the gateway's test double (d1,
    `org/a` loaded) and the neuron's own serve on its fake engine (n1, `org/b` loaded)."""
    (root / "neuron.toml").write_text(
        f'host = "127.0.0.1"\nport = 0\nauth_token = "{NEURON_TOKEN}"\n'
        f'[harness.vllm]\nmodel_dirs = ["{_model_dir(root)}"]\nhf_cache = "{root / "hf"}"\n'
        "cpu_memory_mb = 4000\ndefault_memory_mb = 500\n",
        encoding="utf-8",
    )
    neuron_args = ["-c", str(root / "neuron.toml")]
    double_args = ["--token", DOUBLE_TOKEN, "--loaded", "org/a"]
    with (
        running("neuron", neuron_args, root / "neuron.log") as neuron,
        running("double", double_args, root / "double.log") as double,
    ):
        headers = {"Authorization": f"Bearer {NEURON_TOKEN}"}
        loaded = httpx.post(
            neuron.url + "/models/load", json={"model_id": "org/b"}, headers=headers
        )
        assert loaded.status_code == 200, loaded.text
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
        with running("gateway", gateway_args(root / "cortex.toml"), root / "gateway.log") as gw:
            _wait_for_models(gw.url, {"org/a", "org/b"})
            yield Stack(gw, neuron, double)


def _wait_for_models(url: str, wanted: set[str]) -> None:
    headers = {"Authorization": f"Bearer {KEYS['client']}"}
    for _ in range(500):
        listed = httpx.get(url + "/v1/models", headers=headers).json()["data"]
        if wanted <= {m["id"] for m in listed if m["locations"]}:
            return
        httpx.get(url + "/health")  # a short pause that also proves the gateway answers
    raise AssertionError(f"the gateway never listed {wanted}")


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
