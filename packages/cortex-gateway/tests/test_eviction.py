"""Eviction end to end: the gateway makes room on fake neurons that account memory like a GPU."""

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from cortex_core.config import EvictionOptions, ModelProfile, ModelsConfig
from cortex_gateway.testing import FakeNeuron, eventually, fleet_config, running_gateway, scrape
from cortex_gateway.testing.models import Admitted

pytestmark = pytest.mark.timeout(60)

HI = [{"role": "user", "content": "hi"}]


def models(*profiles: tuple[str, int], **pins: tuple[str, ...]) -> ModelsConfig:
    return ModelsConfig(
        models=tuple(
            ModelProfile(id=m, vram_mb=mb, pinned_on=pins.get(m.replace("org/", ""), ()))
            for m, mb in profiles
        )
    )


async def chat(url: str, model: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    body = {"model": model, "messages": HI, "max_tokens": 2, **extra}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/chat/completions", json=body) as r,
    ):
        raw = await r.read()
        return r.status, {"stream": raw.decode()} if body.get("stream") else json.loads(raw)


def loaded(*neurons: FakeNeuron) -> list[set[str]]:
    return [{m.id for m in n.models.values() if m.status == "loaded"} for n in neurons]


THREE = models(("org/a", 2500), ("org/b", 2500), ("org/c", 2500))


async def test_three_models_on_two_small_nodes_evict_the_least_recently_used():
    async with (
        FakeNeuron(["org/a", "org/b", "org/c"], device_mb=3000) as n1,
        FakeNeuron(["org/a", "org/b", "org/c"], device_mb=3000) as n2,
        running_gateway(fleet_config(n1, n2), THREE) as gw,
    ):
        statuses = [(await chat(gw.url, m))[0] for m in ("org/a", "org/b", "org/a", "org/c")]
        after = loaded(n1, n2)
        samples = await scrape(gw.metrics_url)
    assert statuses == [200, 200, 200, 200]
    # a and b filled both nodes; a was used again, so b (least recent) made room for c
    assert sorted(map(sorted, after)) == [["org/a"], ["org/c"]]
    assert [u.model_id for u in n1.unloads + n2.unloads] == ["org/b"]
    evictions = {k: v for k, v in samples.items() if k[0] == "cortex_evictions_total"}
    assert sum(evictions.values()) == 1
    assert {dict(k[1])["reason"] for k in evictions} == {"lru"}


async def test_a_pinned_model_survives_and_is_loaded_at_start():
    pinned = models(("org/a", 2500), ("org/b", 2500), a=("n1",))
    async with (
        FakeNeuron(["org/a", "org/b"], device_mb=3000) as n1,
        running_gateway(fleet_config(n1), pinned) as gw,
    ):
        await eventually(lambda: _async(loaded(n1) == [{"org/a"}]))  # loaded on its own
        status, body = await chat(gw.url, "org/b")
        async with aiohttp.ClientSession() as session:
            unload = {"model": "org/a", "node": "n1"}
            async with session.post(gw.url + "/admin/models/unload", json=unload) as r:
                refused = (r.status, (await r.json())["error"]["code"])
    assert (status, body["error"]["code"]) == (503, "service_unavailable")  # never evicted
    assert loaded(n1) == [{"org/a"}]
    assert refused == (409, "model_pinned")  # unloading a pin needs force


async def test_a_busy_model_survives_while_a_third_needs_room():
    async with (
        FakeNeuron(["org/a", "org/b", "org/c"], loaded=["org/a"], device_mb=3000) as n1,
        FakeNeuron(["org/a", "org/b", "org/c"], loaded=["org/b"], device_mb=3000) as n2,
    ):
        for fake, model in ((n1, "org/a"), (n2, "org/b")):
            fake.models[model].memory_mb = 2500
            fake.memory.reserve([0], 1500)  # 1000 MiB were reserved as they started loaded
        n1.chunks, n1.chunk_interval = 400, 0.01  # a long stream keeps org/a busy
        async with running_gateway(fleet_config(n1, n2), THREE) as gw:
            stream = asyncio.create_task(chat(gw.url, "org/a", stream=True, max_tokens=400))
            await eventually(lambda: _async(n1.models["org/a"].active == 1))
            status, _ = await chat(gw.url, "org/c")
            stream_status, streamed = await stream
    assert (status, stream_status) == (200, 200)
    assert streamed["stream"].endswith("data: [DONE]\n\n")  # the busy stream ran to its end
    assert [u.model_id for u in n1.unloads] == []  # the busy one stayed
    assert [u.model_id for u in n2.unloads] == ["org/b"]
    assert loaded(n1, n2) == [{"org/a"}, {"org/c"}]


async def test_out_of_memory_is_decided_again_with_the_real_free_memory_and_evicts():
    async with FakeNeuron(["org/x", "org/b"], loaded=["org/x"], device_mb=4000) as n1:
        config = fleet_config(n1, poll_interval_s=30)  # no poll sees what happens next
        profiles = models(("org/x", 1000), ("org/b", 2500))
        async with running_gateway(config, profiles) as gw:
            n1.memory.reserve([0], 1500)  # another process took memory; no poll has seen it
            status, _ = await chat(gw.url, "org/b")
    assert status == 200
    assert [s.model_id for s in n1.loads] == ["org/b", "org/b"]  # refused 507, then again
    assert [u.model_id for u in n1.unloads] == ["org/x"]  # after making room
    assert loaded(n1) == [{"org/b"}]


async def test_two_models_that_cannot_share_a_node_alternate_without_thrashing():
    rounds, clients = 3, 20
    profiles = models(("org/a", 2500), ("org/b", 2500))
    async with FakeNeuron(["org/a", "org/b"], device_mb=3000) as n1:
        n1.load_time, n1.latency = 0.05, 0.01
        async with running_gateway(fleet_config(n1), profiles) as gw:

            async def client(i: int) -> list[int]:
                order = ["org/a", "org/b"] if i % 2 else ["org/b", "org/a"]
                return [(await chat(gw.url, m))[0] for _ in range(rounds) for m in order]

            results = await asyncio.gather(*(client(i) for i in range(clients)))
    assert all(status == 200 for result in results for status in result)
    # every load ran to its end: a model is never unloaded while it loads or serves
    assert all(m.error is None for m in n1.models.values())
    # the queue serves a model's waiters in batches: at most one load per phase, and a client
    # changes phase once per request, so 2 * rounds phases (+1 for the first load)
    print("loads:", [s.model_id for s in n1.loads])
    assert len(n1.loads) <= 2 * rounds + 1, [s.model_id for s in n1.loads]


async def test_an_idle_model_is_unloaded_after_idle_ttl_but_a_pin_is_not():
    pinned = models(("org/a", 1000), ("org/b", 1000), a=("n1",))
    async with FakeNeuron(["org/a", "org/b"], loaded=["org/a", "org/b"]) as n1:
        config = fleet_config(n1, eviction=EvictionOptions(idle_ttl_s=0.3))
        async with running_gateway(config, pinned) as gw:
            assert (await chat(gw.url, "org/b"))[0] == 200
            used = time.monotonic()
            await eventually(lambda: _async(loaded(n1) == [{"org/a"}]))
            waited = time.monotonic() - used
            samples = await scrape(gw.metrics_url)
    assert waited >= 0.3 - 0.05  # not before its time (the fake's clock and ours agree)
    assert [u.model_id for u in n1.unloads] == ["org/b"]
    labels = [dict(k[1]) for k, v in samples.items() if k[0] == "cortex_evictions_total" and v]
    assert labels == [{"node": "n1", "reason": "idle_ttl"}]


async def test_a_drained_node_unloads_its_models_as_they_go_idle():
    async with FakeNeuron(["org/a", "org/b"], loaded=["org/a", "org/b"]) as n1:
        busy = Admitted()
        n1.models["org/a"].admitted.add(busy)
        async with running_gateway(fleet_config(n1)) as gw, aiohttp.ClientSession() as session:
            async with session.post(gw.url + "/admin/nodes/n1/drain") as r:
                assert r.status == 200
            await eventually(lambda: _async(loaded(n1) == [{"org/a"}]))  # b was idle
            n1.models["org/a"].admitted.discard(busy)
            await eventually(lambda: _async(loaded(n1) == [set()]))
            status, body = await chat(gw.url, "org/b")
    assert sorted(u.model_id for u in n1.unloads) == ["org/a", "org/b"]
    assert (status, body["error"]["code"]) == (404, "model_not_found")  # no loads there


async def test_a_full_queue_is_429_and_a_long_wait_is_503_in_the_routes_dialect():
    profiles = models(("org/a", 2500), ("org/b", 2500))
    async with FakeNeuron(["org/a", "org/b"], loaded=["org/a"], device_mb=3000) as n1:
        n1.models["org/a"].memory_mb = 2500
        n1.memory.reserve([0], 1500)
        n1.models["org/a"].admitted.add(Admitted())  # busy: org/b must wait for room
        config = fleet_config(n1, queue_per_model=1, queue_timeout_s=0.5)
        async with running_gateway(config, profiles) as gw:
            waiting = asyncio.create_task(chat(gw.url, "org/b"))
            await eventually(lambda: _queued(gw.metrics_url, "org/b"))
            full = await chat(gw.url, "org/b")
            timed_out = await waiting
            samples = await scrape(gw.metrics_url)
    assert (full[0], full[1]["error"]["code"]) == (429, "rate_limit_exceeded")
    assert (timed_out[0], timed_out[1]["error"]["code"]) == (503, "service_unavailable")
    assert "waited 0.5 s for room" in timed_out[1]["error"]["message"]
    assert samples[("cortex_queue_wait_seconds_count", frozenset())] >= 1
    assert samples[("cortex_queue_depth", frozenset({("model", "org/b")}))] == 0


async def _queued(metrics_url: str, model: str) -> bool:
    depth = (await scrape(metrics_url)).get(("cortex_queue_depth", frozenset({("model", model)})))
    return bool(depth)


async def _async(value: bool) -> bool:
    return value
