"""The gateway's behaviours that hang on what a neuron does, run against the real neuron (its fake
engine) as well as the gateway's double: tokens, 409 `model_busy`, force, draining, the
`model_not_loaded` re-route, the 429 queue limit, an engine that fails mid-stream. The gateway's
unit tests cover the same against the double alone (they may not import the neuron)."""

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from cortex_core.config import GatewayConfig, GatewayOptions, NeuronPeer
from cortex_gateway.testing import RunningGateway, eventually, running_gateway

pytestmark = pytest.mark.timeout(30)

TOKEN = "s3cret"
HI = [{"role": "user", "content": "hi"}]


def config(url: str, token: str = TOKEN, poll_interval_s: float = 0.05) -> GatewayConfig:
    return GatewayConfig(
        gateway=GatewayOptions(poll_interval_s=poll_interval_s),
        neurons=(NeuronPeer(name="n1", endpoint=url, token=token),),
    )


async def call(url: str, method: str = "GET", body: Any = None) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url, json=body) as r:
        raw = await r.read()
        return r.status, dict(r.headers), json.loads(raw) if raw else None


async def chat(gw: RunningGateway, **extra: Any) -> tuple[int, dict[str, str], Any]:
    body = {"model": "org/a", "messages": HI, **extra}
    return await call(gw.url + "/v1/chat/completions", "POST", body)


async def admin(gw: RunningGateway, verb: str, **body: Any) -> tuple[int, Any]:
    status, _, answer = await call(gw.url + f"/admin/models/{verb}", "POST", body)
    return status, answer


async def at_the_neuron(target: Any, in_flight: int, queued: int = 0) -> None:
    async def seen() -> bool:
        models = (await target.http.get("/health")).json()["models"]
        return bool(models == [{"id": "org/a", "in_flight": in_flight, "queued": queued}])

    await eventually(seen, within=10)


async def test_the_gateway_sends_the_neurons_token_and_a_wrong_one_keeps_the_node_down(target):
    async with running_gateway(config(target.url)) as gw:
        status, _, answer = await chat(gw, max_tokens=2)
        assert status == 200, answer
    async with running_gateway(config(target.url, token="wrong")) as gw:
        status, _, answer = await chat(gw)
        assert (status, answer["error"]["code"]) == (404, "model_not_found")  # no node to use
        health = await call(gw.url + "/health")
        assert (health[0], health[2]["nodes"]) == (503, {"healthy": 0, "total": 1})


async def test_a_busy_model_is_409_and_a_forced_unload_ends_its_request(target):
    target.slow_answers(30)
    async with running_gateway(config(target.url)) as gw:
        assert (await admin(gw, "load", model="org/a"))[0] == 200
        running = asyncio.create_task(chat(gw))
        await at_the_neuron(target, 1)
        status, answer = await admin(gw, "unload", model="org/a", node="n1")
        assert (status, answer["error"]["code"]) == (409, "model_busy")
        status, answer = await admin(gw, "unload", model="org/a", node="n1", force=True)
        assert status == 200, answer
        status, _, answer = await running
    assert (status, answer["error"]["code"]) == (503, "service_unavailable")


async def test_a_draining_neuron_gets_no_new_work(target):
    async with running_gateway(config(target.url)) as gw:
        assert (await admin(gw, "load", model="org/a"))[0] == 200
        drain = target.drain()

        async def seen_draining() -> bool:
            nodes = (await call(gw.url + "/fleet"))[2]["nodes"]
            return bool(nodes[0]["draining"])

        await eventually(seen_draining)
        status, _, answer = await chat(gw)  # the only node that has it is going away
        assert (status, answer["error"]["code"]) == (404, "model_not_found")
        status, answer = await admin(gw, "load", model="org/b")
        assert (status, answer["error"]["code"]) == (404, "model_not_found"), answer
        await drain
    assert target.loads() == 1  # org/a's, before the drain: nothing reached the neuron after


async def test_model_not_loaded_from_the_neuron_reroutes_and_reloads(target):
    # polls far apart: the gateway still believes org/a loaded after the neuron unloaded it
    async with running_gateway(config(target.url, poll_interval_s=30)) as gw:
        assert (await admin(gw, "load", model="org/a"))[0] == 200
        unloaded = await target.http.post("/models/unload", json={"model_id": "org/a"})
        assert unloaded.status_code == 200
        status, _, answer = await chat(gw, max_tokens=2)
    assert status == 200, answer
    assert target.loads() == 2


async def test_the_neurons_queue_limit_reaches_the_client_with_retry_after(target):
    target.slow_answers(30)
    async with running_gateway(config(target.url)) as gw:
        assert (await admin(gw, "load", model="org/a"))[0] == 200
        held = [asyncio.create_task(chat(gw)) for _ in range(2)]
        await at_the_neuron(target, 1, 1)  # one runs, one waits (concurrency 1, max_queued 1)
        status, headers, answer = await chat(gw)
        for request in held:
            request.cancel()
        await asyncio.gather(*held, return_exceptions=True)
    assert (status, answer["error"]["code"]) == (429, "rate_limit_exceeded")
    assert headers["Retry-After"] == "1"


async def test_an_engine_that_fails_mid_stream_ends_the_clients_stream_with_its_error(target):
    target.slow_answers(30)
    async with running_gateway(config(target.url)) as gw:
        assert (await admin(gw, "load", model="org/a"))[0] == 200
        body = {"model": "org/a", "messages": HI, "stream": True}
        async with (
            aiohttp.ClientSession() as session,
            session.post(gw.url + "/v1/chat/completions", json=body) as response,
        ):
            await at_the_neuron(target, 1)
            target.kill("org/a")
            raw = await response.read()
    events = [
        line.removeprefix(b"data: ") for line in raw.split(b"\n") if line.startswith(b"data:")
    ]
    assert response.status == 200
    assert events[-1] == b"[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "engine_failed"
