"""Polling: nodes go down after three failed polls and come back; a slow node delays no other;
the nodes' turns are spread over the interval."""

import time
from typing import Any

import aiohttp
import msgspec
import pytest
from prometheus_client import CollectorRegistry

from cortex_core.config import NeuronPeer
from cortex_core.errors import ServiceUnavailableError
from cortex_gateway.fleet.node import Node
from cortex_gateway.fleet.poller import Poller, poll_timeout
from cortex_gateway.metrics import Metrics
from cortex_gateway.testing import FakeNeuron, eventually, fleet_config, running_gateway, scrape

pytestmark = pytest.mark.timeout(30)


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        return r.status, await r.json()


async def node_view(url: str, name: str) -> Any:
    _, fleet = await get(url + "/fleet")
    (view,) = [n for n in fleet["nodes"] if n["name"] == name]
    return view


async def test_a_node_is_down_after_three_failed_polls_and_up_on_the_first_success(neuron):
    async with running_gateway(fleet_config(neuron)) as gw:
        polls_before = len(neuron.control_headers)
        neuron.poll_status = 500

        async def down() -> bool:
            return not (await node_view(gw.url, "n1"))["up"]

        async def failures() -> Any:
            return (await node_view(gw.url, "n1"))["consecutive_failures"]

        await eventually(lambda: _equals(failures, 2))
        assert (await node_view(gw.url, "n1"))["up"]  # two failures: still up
        await eventually(down)
        assert (await node_view(gw.url, "n1"))["consecutive_failures"] >= 3
        assert len(neuron.control_headers) - polls_before >= 3
        assert await get(gw.url + "/health") == (
            503,
            {"status": "degraded", "nodes": {"healthy": 0, "total": 1}},
        )
        _, models = await get(gw.url + "/v1/models")
        assert models["data"] == []  # a down node serves nothing
        samples = await scrape(gw.metrics_url)
        assert samples[("cortex_node_up", frozenset({("node", "n1")}))] == 0
        assert not any(name.startswith("cortex_device_") for name, _ in samples)

        neuron.poll_status = 200

        async def up() -> bool:
            return (await get(gw.url + "/health"))[0] == 200

        await eventually(up)
        assert (await node_view(gw.url, "n1"))["consecutive_failures"] == 0
        samples = await scrape(gw.metrics_url)
        assert samples[("cortex_node_up", frozenset({("node", "n1")}))] == 1


async def _equals(read, value) -> bool:
    return bool(await read() == value)


async def test_a_slow_node_never_delays_another():
    async with (
        FakeNeuron(["org/a"], loaded=["org/a"]) as slow,
        FakeNeuron(["org/a"], loaded=["org/a"]) as quick,
        running_gateway(fleet_config(slow, quick, poll_interval_s=0.05)) as gw,
    ):
        slow.poll_delay = 3 * poll_timeout(0.05)
        started = time.time()

        async def quick_polled_since_start() -> bool:
            return bool((await node_view(gw.url, "n2"))["last_poll"] > started + 0.2)

        await eventually(quick_polled_since_start, within=3)
        assert (await node_view(gw.url, "n1"))["last_poll"] < started


async def test_the_neuron_token_is_sent_and_a_wrong_one_keeps_the_node_down():
    async with FakeNeuron(["org/a"], loaded=["org/a"], token="s3cret") as fake:
        right = fleet_config(fake)
        async with running_gateway(right) as gw:
            status, _ = await get(gw.url + "/health")
        assert status == 200
        assert fake.control_headers[-1]["authorization"] == "Bearer s3cret"
        peer = msgspec.structs.replace(right.neurons[0], token="wrong")
        async with running_gateway(msgspec.structs.replace(right, neurons=(peer,))) as gw:
            status, _ = await get(gw.url + "/health")
    assert status == 503  # its polls are refused: never up


async def test_discovery_is_asked_on_first_contact_and_after_a_restart(neuron):
    async with running_gateway(fleet_config(neuron)) as gw:
        view = await node_view(gw.url, "n1")
        assert view["devices"] == [
            {
                "index": 0,
                "kind": "gpu",
                "name": "Fake GPU",
                "memory_total_mb": 24000,
                "memory_free_mb": 23000,
                "utilization_pct": 10,
            }
        ]
        neuron.memory.total = [48000]
        neuron.started_at = time.time() + 60  # uptime goes back: the neuron restarted

        async def rediscovered() -> bool:
            return bool((await node_view(gw.url, "n1"))["devices"][0]["memory_total_mb"] == 48000)

        await eventually(rediscovered)


def test_the_poll_bound_is_short_but_not_shorter_than_half_a_second():
    assert poll_timeout(0.05) == 0.5
    assert poll_timeout(2) == 4
    assert poll_timeout(60) == 5


async def test_the_nodes_turns_are_spread_over_the_interval():
    """A big fleet's polls must not all land on the gateway's event loop at once."""
    polled: dict[str, float] = {}

    class Recording:
        async def get(self, peer: NeuronPeer, path: str, type_: Any, *, limit_s: float) -> Any:
            polled.setdefault(peer.name, time.monotonic())
            raise ServiceUnavailableError("not listening")

    nodes = [Node(NeuronPeer(name=f"n{i}", endpoint="http://127.0.0.1:9")) for i in range(4)]
    poller = Poller(nodes, Recording(), Metrics(CollectorRegistry()), interval=1.0)  # type: ignore[arg-type]

    async def all_polled() -> bool:
        return len(polled) == len(nodes)

    async with poller.running():
        await eventually(all_polled)
    firsts = [polled[node.name] for node in nodes]
    assert firsts == sorted(firsts)
    assert firsts[-1] - firsts[0] >= 0.4  # 0.75 s when spread evenly; all at once would be ~0
