"""``cortex status`` against a running gateway (over loopback), and its failures."""

import asyncio
import socket

import aiohttp
import pytest
from click.testing import CliRunner, Result

from cortex_cli.main import main
from cortex_core.config import AuthOptions, EvictionOptions, ModelProfile, ModelsConfig
from cortex_gateway.testing import FakeNeuron, eventually, fleet_config, running_gateway

pytestmark = pytest.mark.timeout(30)


async def status(*args: str, **env: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, main, ["status", *args], env=env)


async def test_status_shows_nodes_and_models():
    models = ModelsConfig(models=(ModelProfile(id="org/a", aliases=("a",), pinned_on=("n1",)),))
    async with (
        FakeNeuron(["org/a", "org/b"], loaded=["org/a"]) as n1,
        FakeNeuron() as n2,
    ):
        n1.latency = 30  # two requests run while the status is taken
        n2.poll_status = 500
        config = fleet_config(n1, n2, eviction=EvictionOptions(defrag_after_cycles=0))
        async with running_gateway(config, models) as gw, aiohttp.ClientSession() as http:
            body = {"model": "org/a", "messages": []}
            running = [
                asyncio.create_task(http.post(gw.url + "/v1/chat/completions", json=body))
                for _ in range(2)
            ]

            async def both_seen() -> bool:
                return "2 in flight" in (await status("--url", gw.url)).output

            await eventually(both_seen)
            result = await status("--url", gw.url)
            for request in running:
                request.cancel()
            await asyncio.gather(*running, return_exceptions=True)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NODE", "STATE", "DEVICES", "CYCLES", "POLLED", "ENDPOINT"]
    assert lines[1].split()[:8] == ["n1", "up", "gpu0", "23000/24000", "MiB", "free", "10%", "0"]
    assert lines[1].endswith(n1.url)
    assert lines[2].split()[:4] == ["n2", "down", "-", "0"]
    assert "never" in lines[2]
    assert lines[4].split() == ["MODEL", "ALIASES", "WHERE"]
    assert lines[5].split(None, 2) == ["org/a", "a", "n1 (loaded, 2 in flight, pinned)"]
    assert lines[6].split(None, 2) == ["org/b", "-", "n1 (available)"]


async def test_status_sends_the_key_from_the_environment():
    async with (
        FakeNeuron() as fake,
        running_gateway(fleet_config(fake, auth=AuthOptions(api_keys=("k1",)))) as gw,
    ):
        refused = await status("--url", gw.url)
        allowed = await status(CORTEX_URL=gw.url, CORTEX_API_KEY="k1")
    assert refused.exit_code == 1
    assert "Error: the gateway answered 401: No API key" in refused.output
    assert allowed.exit_code == 0, allowed.output
    assert "no models" in allowed.output


async def test_status_says_when_the_gateway_cannot_be_reached_or_is_not_one():
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    async with FakeNeuron() as fake:
        unreachable = await status("--url", f"http://127.0.0.1:{port}")
        not_a_gateway = await status("--url", fake.url)
        async with running_gateway(fleet_config()) as gw:
            empty = await status("--url", gw.url + "/")
    assert unreachable.exit_code == 1
    assert f"cannot reach the gateway at http://127.0.0.1:{port}" in unreachable.output
    assert not_a_gateway.exit_code == 1
    assert "the gateway answered 404: no route /fleet" in not_a_gateway.output
    assert empty.output.startswith("no neurons configured")
