"""/health, /fleet, the operator's load and unload, and errors on unknown routes."""

import asyncio
from typing import Any

import aiohttp
import openai
import pytest

from cortex_core.config import EvictionOptions, ModelProfile, ModelsConfig
from cortex_gateway.testing import FakeNeuron, eventually, fleet_config, running_gateway

pytestmark = pytest.mark.timeout(30)


async def call(url: str, method: str = "GET", body: object = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url, json=body) as r:
        return r.status, await r.json()


async def test_health_is_ok_degraded_or_503():
    async with FakeNeuron() as up, FakeNeuron() as down:
        down.poll_status = 503
        async with running_gateway(fleet_config(up)) as gw:
            assert await call(gw.url + "/health") == (
                200,
                {"status": "ok", "nodes": {"healthy": 1, "total": 1}},
            )
            assert (await call(gw.url + "/"))[0] == 200
        async with running_gateway(fleet_config(up, down)) as gw:
            assert await call(gw.url + "/health") == (
                200,
                {"status": "degraded", "nodes": {"healthy": 1, "total": 2}},
            )
        async with running_gateway(fleet_config()) as gw:
            assert await call(gw.url + "/health") == (
                503,
                {"status": "degraded", "nodes": {"healthy": 0, "total": 0}},
            )


async def test_fleet_shows_nodes_devices_models_and_pins(neuron):
    models = ModelsConfig(models=(ModelProfile(id="org/a", pinned_on=("n1",), aliases=("a",)),))
    async with running_gateway(fleet_config(neuron), models) as gw:
        status, fleet = await call(gw.url + "/fleet")
    assert status == 200
    (node,) = fleet["nodes"]
    assert node["name"] == "n1"
    assert node["endpoint"] == neuron.url
    assert node["up"] is True
    assert node["last_poll"] > 0
    assert (node["consecutive_failures"], node["load_unload_cycles"]) == (0, 0)
    assert (node["defrag_due"], node["draining"]) == (False, False)
    assert node["devices"][0]["memory_free_mb"] == 23000
    assert node["models"] == [
        {
            "id": "org/a",
            "status": "loaded",
            "memory_mb": 1000,
            "in_flight": 0,
            "queued": 0,
            "last_used": None,
            "pinned": True,
        },
        {
            "id": "org/b",
            "status": "available",
            "memory_mb": None,
            "in_flight": 0,
            "queued": 0,
            "last_used": None,
            "pinned": False,
        },
    ]
    assert fleet["models"] == [
        {
            "id": "org/a",
            "aliases": ["a"],
            "locations": [{"node": "n1", "status": "loaded"}],
            "queued": 0,
        },
        {
            "id": "org/b",
            "aliases": [],
            "locations": [{"node": "n1", "status": "available"}],
            "queued": 0,
        },
    ]


async def test_admin_load_and_unload_go_through_the_router():
    models = ModelsConfig(models=(ModelProfile(id="org/b", vram_mb=2000),))
    async with (
        FakeNeuron(["org/a", "org/b"], loaded=["org/a"]) as n1,
        FakeNeuron(["org/b"], device_mb=500) as n2,
        running_gateway(fleet_config(n1, n2), models) as gw,
    ):
        load = gw.url + "/admin/models/load"
        unload = gw.url + "/admin/models/unload"
        for ask in ({"model": "org/b"}, {"model": "org/b", "node": "n1"}):
            status, body = await call(load, "POST", ask)
            assert status == 200
            assert body.pop("seconds") >= 0
            assert body == {"status": "loaded", "model": "org/b", "node": "n1", "evicted": []}
        status, body = await call(load, "POST", {"model": "org/b", "node": "n2"})
        assert (status, body["error"]["code"]) == (503, "service_unavailable")  # no room
        status, body = await call(load, "POST", {"model": "org/b", "node": "n2", "force": True})
        assert (status, body["error"]["code"]) == (507, "out_of_memory")  # the neuron judged
        status, body = await call(load, "POST", {"model": "org/b", "node": "n9"})
        assert (status, body["error"]["param"]) == (404, "node")
        status, body = await call(load, "POST", {"model": 3})
        assert (status, body["error"]["param"]) == (400, "model")
        status, body = await call(load, "POST", {"model": "x" * 70000})
        assert (status, body["error"]["code"]) == (413, "request_too_large")
        assert await call(unload, "POST", {"model": "org/b", "drain": True}) == (
            200,
            {"status": "unloaded", "model": "org/b", "nodes": ["n1"]},
        )
        n1.latency = 30  # a request is running: the neuron refuses, unless forced
        running = asyncio.create_task(
            call(gw.url + "/v1/chat/completions", "POST", {"model": "org/a", "messages": []})
        )

        async def admitted() -> bool:
            return n1.models["org/a"].active == 1

        await eventually(admitted)
        status, body = await call(unload, "POST", {"model": "org/a", "node": "n1"})
        assert (status, body["error"]["code"]) == (409, "model_busy")
        assert await call(unload, "POST", {"model": "org/a", "node": "n1", "force": True}) == (
            200,
            {"status": "unloaded", "model": "org/a", "nodes": ["n1"]},
        )
        status, body = await running  # the forced unload ended it
        assert (status, body["error"]["code"]) == (503, "service_unavailable")
        status, body = await call(unload, "POST", {"model": "org/a"})
        assert (status, body["error"]["code"]) == (404, "model_not_loaded")
    assert [(u.force, u.drain) for u in n1.unloads] == [
        (False, True),
        (False, False),
        (True, False),
    ]


async def test_admin_load_forced_where_nothing_fits_tries_the_first_node():
    models = ModelsConfig(
        models=(ModelProfile(id="org/b", vram_mb=900), ModelProfile(id="org/x", pinned_on=("n1",)))
    )
    async with (
        FakeNeuron(["org/b", "org/x"], loaded=["org/x"], device_mb=1000) as fake,
        running_gateway(fleet_config(fake), models) as gw,
    ):
        url = gw.url + "/admin/models/load"
        status, body = await call(url, "POST", {"model": "org/b"})
        assert (status, body["error"]["code"]) == (503, "service_unavailable")
        status, body = await call(url, "POST", {"model": "org/b", "force": True})
    assert (status, body["error"]["code"]) == (507, "out_of_memory")
    assert fake.loads[-1].devices is None


async def test_a_down_or_draining_node_takes_no_admin_load():
    async with (
        FakeNeuron(["org/b"]) as draining,
        FakeNeuron(["org/b"]) as down,
        FakeNeuron(["org/b"]) as healthy,
    ):
        draining.draining = True
        down.poll_status = 500
        async with running_gateway(fleet_config(draining, down, healthy)) as gw:
            url = gw.url + "/admin/models/load"
            first = await call(url, "POST", {"model": "org/b", "node": "n1"})
            second = await call(url, "POST", {"model": "org/b", "node": "n2"})
    assert first == (503, first[1])
    assert first[1]["error"]["message"] == "node n1 is draining"
    assert second[1]["error"]["message"] == "node n2 is down"
    assert draining.loads == down.loads == healthy.loads == []


async def test_a_route_only_gateway_refuses_admin_lifecycle(neuron):
    config = fleet_config(neuron, eviction=EvictionOptions(lifecycle=False))
    async with running_gateway(config) as gw:
        status, body = await call(gw.url + "/admin/models/unload", "POST", {"model": "org/a"})
    assert (status, body["error"]["code"]) == (403, "permission_denied")
    assert "lifecycle = false" in body["error"]["message"]


async def test_unknown_routes_and_methods_get_the_envelope(neuron):
    async with running_gateway(fleet_config(neuron)) as gw:
        missing = await call(gw.url + "/v2/nothing")
        wrong_method = await call(gw.url + "/v1/chat/completions")
    assert (missing[0], missing[1]["error"]["code"]) == (404, "not_found")
    assert (wrong_method[0], wrong_method[1]["error"]["code"]) == (405, "method_not_allowed")


async def test_an_unexpected_error_is_a_500_envelope_with_the_request_id(neuron, monkeypatch):
    from cortex_gateway.fleet.catalogue import Catalogue

    def broken(self):
        raise RuntimeError("a bug")

    async with running_gateway(fleet_config(neuron)) as gw:
        monkeypatch.setattr(Catalogue, "model_list", broken)
        async with (
            aiohttp.ClientSession() as session,
            session.get(gw.url + "/v1/models", headers={"x-request-id": "rid-1"}) as r,
        ):
            status, body = r.status, await r.json()
    assert status == 500
    assert body["error"]["message"] == (
        "Internal error; the gateway's log has it under request id rid-1"
    )
    assert "Traceback" not in str(body)


async def test_an_operator_cordons_drains_and_uncordons_a_node(neuron):
    async with running_gateway(fleet_config(neuron)) as gw:
        answers = {}
        for action in ("cordon", "drain", "uncordon"):
            status, body = await call(gw.url + f"/admin/nodes/n1/{action}", method="POST")
            fleet = (await call(gw.url + "/fleet"))[1]["nodes"][0]
            answers[action] = (status, body, fleet["cordoned"], fleet["draining"])
        missing = await call(gw.url + "/admin/nodes/nope/cordon", method="POST")
        unknown = await call(gw.url + "/admin/nodes/n1/reboot", method="POST")
    assert answers == {
        "cordon": (200, {"node": "n1", "cordoned": True, "draining": False}, True, False),
        "drain": (200, {"node": "n1", "cordoned": True, "draining": True}, True, True),
        "uncordon": (200, {"node": "n1", "cordoned": False, "draining": False}, False, False),
    }
    assert (missing[0], missing[1]["error"]["param"]) == (404, "node")
    assert unknown[0] == 404


async def test_a_cordoned_node_serves_what_it_holds_and_loads_nothing(neuron, client):
    async with running_gateway(fleet_config(neuron)) as gw:
        await call(gw.url + "/admin/nodes/n1/cordon", method="POST")
        sdk = client(gw.url)
        await sdk.chat.completions.create(
            model="org/a", messages=[{"role": "user", "content": "hi"}]
        )
        listed = {m.id async for m in sdk.models.list()}
        with pytest.raises(openai.NotFoundError):
            await sdk.chat.completions.create(
                model="org/b", messages=[{"role": "user", "content": "hi"}]
            )
    assert listed == {"org/a"}
    assert neuron.loads == []
