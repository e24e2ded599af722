"""Deactivation (DESIGN §3): on SIGTERM the listener stays open, in-flight work finishes,
new work gets 503, engines stop, serve() returns."""

import asyncio
import logging
import os
import signal

import httpx
import pytest

from cortex_core.config import HarnessOptions, NeuronConfig
from cortex_neuron.app import build_context
from cortex_neuron.engine.fake import FakeStarter
from cortex_neuron.server import listen, serve

from .conftest import NoGpu


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_drains_then_stops(options, signum, caplog):
    caplog.set_level(logging.INFO, logger="cortex_neuron.server")
    starter = FakeStarter(token_delay=0.03)
    config = NeuronConfig(host="127.0.0.1", port=0, harness=HarnessOptions(vllm=options))
    ctx = build_context(config, starter, nvml=NoGpu())
    sock = listen(config)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = asyncio.create_task(serve(ctx, sock))
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        assert (await http.post("/models/load", json={"model_id": "org/alpha"})).status_code == 200
        body = {
            "model": "org/alpha",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "max_tokens": 40,
        }
        async with http.stream("POST", "/v1/chat/completions", json=body) as stream:
            lines = stream.aiter_lines()
            await anext(lines)
            os.kill(os.getpid(), signum)
            await asyncio.sleep(0.1)
            health = (await http.get("/health")).json()
            assert health["draining"] is True
            refused = await http.post("/v1/chat/completions", json={**body, "stream": False})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "shutting_down"
            rest = [line async for line in lines if line.startswith("data:")]
        assert rest[-1] == "data: [DONE]"
        assert not any('"error"' in line for line in rest)
        assert len(rest) >= 40
    await asyncio.wait_for(server, 10)
    assert starter.engines["org/alpha"].shut_down
    assert "listening on http://127.0.0.1:" in caplog.text


async def test_a_second_signal_is_noted(options, caplog):
    caplog.set_level(logging.INFO, logger="cortex_neuron.server")
    config = NeuronConfig(host="127.0.0.1", port=0, harness=HarnessOptions(vllm=options))
    ctx = build_context(config, FakeStarter(), nvml=NoGpu())
    server = asyncio.create_task(serve(ctx, listen(config)))
    await asyncio.sleep(0.2)
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(server, 10)
    assert "SIGTERM again: already shutting down" in caplog.text


class Warmer:
    """A warm-up that takes a while, or fails."""

    def __init__(self, memory_mb: int, fail: bool = False) -> None:
        self.memory_mb = memory_mb
        self.fail = fail
        self.calls: list[str] = []
        self.done = asyncio.Event()

    async def warm(self, kind: str) -> None:
        self.calls.append(f"warm {kind}")
        try:
            await asyncio.sleep(0.1)
            if self.fail:
                raise RuntimeError("vLLM is not installed")
            self.calls.append("warmed")
        finally:
            self.done.set()

    async def close(self) -> None:
        self.calls.append("close")


@pytest.mark.parametrize("fail", [False, True], ids=["warms", "fails"])
async def test_the_warm_up_runs_in_the_background_and_stops_with_the_neuron(options, caplog, fail):
    caplog.set_level(logging.INFO, logger="cortex_neuron.app")
    warmer = Warmer(memory_mb=1200, fail=fail)
    config = NeuronConfig(host="127.0.0.1", port=0, harness=HarnessOptions(vllm=options))
    ctx = build_context(config, FakeStarter(), nvml=NoGpu(), warmer=warmer)
    sock = listen(config)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = asyncio.create_task(serve(ctx, sock))
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for _ in range(100):
            try:
                health = await http.get("/health")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.02)
        assert health.status_code == 200  # answered while the warm-up runs
        assert warmer.calls == ["warm cpu"]
        assert (await http.get("/discovery")).json()["spare_memory_mb"] == 1200
        await asyncio.wait_for(warmer.done.wait(), 10)
        assert (await http.post("/models/load", json={"model_id": "org/alpha"})).status_code == 200
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(server, 10)
    assert warmer.calls[-1] == "close"
    if fail:
        assert "warming the engine up failed" in caplog.text
    else:
        assert "warmed" in warmer.calls
        assert "engine warmed up in" in caplog.text


def test_listen_on_ipv6_loopback():
    sock = listen(NeuronConfig(host="::1", port=0))
    try:
        assert sock.getsockname()[0] == "::1"
    finally:
        sock.close()
