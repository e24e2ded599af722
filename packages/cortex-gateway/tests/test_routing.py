"""Routing and on-demand loads: replicas, the stampede, load failures, lifecycle = false."""

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest

from cortex_core.config import EvictionOptions, ModelProfile, ModelsConfig
from cortex_core.wire.control import ModelSpec
from cortex_gateway.testing import FakeModel, FakeNeuron, eventually, fleet_config, running_gateway

pytestmark = pytest.mark.timeout(30)

HI = [{"role": "user", "content": "hi"}]


async def chat(url: str, model: str) -> tuple[int, dict[str, str], Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/chat/completions", json={"model": model, "messages": HI}) as r,
    ):
        return r.status, dict(r.headers), await r.json()


async def test_the_replica_with_fewest_requests_in_flight_gets_the_next_one(client):
    async with (
        FakeNeuron(["org/a"], loaded=["org/a"]) as first,
        FakeNeuron(["org/a"], loaded=["org/a"]) as second,
        running_gateway(fleet_config(first, second)) as gw,
    ):
        first.latency = second.latency = 30  # the first request runs until it is cancelled
        sdk = client(gw.url)
        slow = asyncio.create_task(sdk.chat.completions.create(model="org/a", messages=HI))

        async def one_in_flight() -> bool:
            return len(first.requests) + len(second.requests) == 1

        await eventually(one_in_flight)
        busy, idle = (first, second) if first.requests else (second, first)
        busy.latency = idle.latency = 0
        await sdk.chat.completions.create(model="org/a", messages=HI)
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)
    assert len(idle.requests) == 1
    assert len(busy.requests) == 1


async def test_fifty_cold_requests_cause_exactly_one_load_and_are_all_served(neuron, client):
    neuron.load_time = 0.3
    async with running_gateway(fleet_config(neuron)) as gw:
        sdk = client(gw.url)
        answers = await asyncio.gather(
            *(sdk.chat.completions.create(model="org/b", messages=HI) for _ in range(50))
        )
    assert len(neuron.loads) == 1
    assert all(a.choices[0].message.content == "tok0 tok1 tok2 " for a in answers)
    assert len(neuron.requests) == 50


async def test_every_waiter_of_a_failed_load_gets_its_error(neuron):
    neuron.load_failures["org/b"] = (422, "unsupported_model")
    neuron.load_time = 0.2
    async with running_gateway(fleet_config(neuron)) as gw:
        answers = await asyncio.gather(*(chat(gw.url, "org/b") for _ in range(10)))
        assert len(neuron.loads) == 1
        assert {(status, body["error"]["code"]) for status, _, body in answers} == {
            (422, "unsupported_model")
        }
        neuron.load_failures.clear()  # the next request retries the load
        status, _, _ = await chat(gw.url, "org/b")
    assert status == 200
    assert len(neuron.loads) == 2


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (404, "model_not_found"),
        (507, "out_of_memory"),
        (503, "shutting_down"),
        (500, "load_failed"),
    ],
)
async def test_a_load_refused_with_a_retryable_code_goes_elsewhere(status, code):
    async with (
        FakeNeuron(["org/b"]) as first,
        FakeNeuron(["org/b"]) as second,
        running_gateway(fleet_config(first, second)) as gw,
    ):
        first.load_failures["org/b"] = (status, code)
        got, _, _ = await chat(gw.url, "org/b")
    assert got == 200
    # out_of_memory is decided again once on the same node, its memory read afresh (issue 8)
    assert [len(first.loads), len(second.loads)] == [2 if status == 507 else 1, 1]
    assert second.models["org/b"].status == "loaded"


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "invalid_spec"), (422, "unsupported_model"), (400, "invalid_model_id")],
)
async def test_a_load_refused_for_the_model_itself_is_not_retried(status, code):
    async with (
        FakeNeuron(["org/b"]) as first,
        FakeNeuron(["org/b"]) as second,
        running_gateway(fleet_config(first, second)) as gw,
    ):
        first.load_failures["org/b"] = (status, code)
        got, _, body = await chat(gw.url, "org/b")
    assert (got, body["error"]["code"]) == (status, code)
    assert body["error"]["message"] == f"fake refusal: {code}"
    assert second.loads == []


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (507, "out_of_memory"),
        (404, "model_not_found"),
        (503, "shutting_down"),
        (500, "load_failed"),
    ],
)
async def test_when_every_node_refuses_the_client_gets_the_neurons_error(status, code):
    async with (
        FakeNeuron(["org/b"]) as first,
        FakeNeuron(["org/b"]) as second,
        running_gateway(fleet_config(first, second)) as gw,
    ):
        first.load_failures["org/b"] = second.load_failures["org/b"] = (status, code)
        got, _, body = await chat(gw.url, "org/b")
    assert (got, body["error"]["code"]) == (status, code)
    tries = 2 if status == 507 else 1  # out_of_memory: once more on each node, then elsewhere
    assert [len(first.loads), len(second.loads)] == [tries, tries]


async def test_load_failed_is_retried_only_once():
    async with (
        FakeNeuron(["org/b"]) as n1,
        FakeNeuron(["org/b"]) as n2,
        FakeNeuron(["org/b"]) as n3,
        running_gateway(fleet_config(n1, n2, n3)) as gw,
    ):
        for fake in (n1, n2, n3):
            fake.load_failures["org/b"] = (500, "load_failed")
        got, _, body = await chat(gw.url, "org/b")
    assert (got, body["error"]["code"]) == (500, "load_failed")
    assert [len(n1.loads), len(n2.loads), len(n3.loads)] == [1, 1, 0]


async def test_the_load_spec_carries_the_models_toml_settings(tmp_path):
    template = tmp_path / "chat.jinja"
    template.write_text("{{ messages }}", encoding="utf-8")
    profile = ModelProfile(
        id="org/b",
        vram_mb=8000,
        min_devices=2,
        max_model_len=8192,
        tool_call_parser="hermes",
        reasoning_parser="",
        chat_template=str(template),
        engine_args={"enforce_eager": True},
    )
    async with (
        FakeNeuron(["org/b"], devices=2, device_mb=6000) as fake,
        running_gateway(fleet_config(fake), ModelsConfig(models=(profile,))) as gw,
    ):
        got, _, _ = await chat(gw.url, "org/b")
    assert got == 200
    assert fake.loads == [
        ModelSpec(
            model_id="org/b",
            memory_mb=8000,
            devices=[0, 1],
            tensor_parallel=2,
            max_model_len=8192,
            tool_call_parser="hermes",
            reasoning_parser=None,
            chat_template="{{ messages }}",
            engine_args={"enforce_eager": True},
        )
    ]


async def test_first_fit_skips_a_node_without_room_and_counts_loads_under_way():
    models = ModelsConfig(
        models=(
            ModelProfile(id="org/b", vram_mb=3000),
            ModelProfile(id="org/c", vram_mb=3000),
            ModelProfile(id="org/x", pinned_on=("n1",)),  # nothing makes room on n1
        )
    )
    async with (
        FakeNeuron(
            ["org/b", "org/c", FakeModel("org/x", memory_mb=2000)], loaded=["org/x"], device_mb=4000
        ) as small,  # 2000 MiB free: org/b does not fit there
        FakeNeuron(["org/b", "org/c"], device_mb=5000) as big,
        running_gateway(fleet_config(small, big), models) as gw,
    ):
        await eventually(lambda: _free(gw.url, "n1", 2000))
        big.load_time = 0.3
        first = asyncio.create_task(chat(gw.url, "org/b"))

        async def loading() -> bool:
            return big.models["org/b"].status == "loading"

        await eventually(loading)
        # 2000 MiB left on n2 while org/b loads: org/c waits for room, not placed beside it
        second = asyncio.create_task(chat(gw.url, "org/c"))
        first_status = (await first)[0]
        second_status = (await second)[0]
    assert (first_status, second_status) == (200, 200)
    # org/b served its request before it made room for org/c; nothing loaded beside it
    assert [s.model_id for s in big.loads] == ["org/b", "org/c"]
    assert [u.model_id for u in big.unloads] == ["org/b"]
    assert small.loads == []


async def _free(url: str, node: str, mb: int) -> bool:
    async with aiohttp.ClientSession() as session, session.get(url + "/fleet") as r:
        fleet = await r.json()
    (view,) = [n for n in fleet["nodes"] if n["name"] == node]
    return bool(view["devices"][0]["memory_free_mb"] == mb)


async def test_a_load_under_way_on_a_node_is_joined_there():
    async with (
        FakeNeuron(["org/b"]) as first,
        FakeNeuron(["org/b"]) as second,
        running_gateway(fleet_config(first, second)) as gw,
    ):
        second.load_time = 30  # until the gateway has joined it (load_time is read as it runs)
        async with aiohttp.ClientSession() as session:
            elsewhere = asyncio.create_task(
                session.post(second.url + "/models/load", json={"model_id": "org/b"})
            )

            async def seen_loading() -> bool:
                async with session.get(gw.url + "/v1/models/org/b") as r:
                    card = await r.json()
                return bool(card["locations"][1]["status"] == "loading")

            await eventually(seen_loading)
            asked = asyncio.create_task(chat(gw.url, "org/b"))

            async def joined() -> bool:
                return len(second.loads) == 2

            await eventually(joined)
            second.load_time = 0
            got, _, _ = await asked
            (await elsewhere).release()
    assert got == 200
    assert first.loads == []
    assert len(second.loads) == 2  # the other caller's load and the gateway's, shared


async def test_a_route_only_gateway_never_loads(neuron, client):
    config = fleet_config(neuron, eviction=EvictionOptions(lifecycle=False))
    async with running_gateway(config) as gw:
        loaded = await client(gw.url).chat.completions.create(model="org/a", messages=HI)
        status, headers, body = await chat(gw.url, "org/b")
    assert loaded.choices[0].message.content
    assert (status, body["error"]["code"]) == (503, "service_unavailable")
    assert "lifecycle = false" in body["error"]["message"]
    assert headers["Retry-After"] == "10"
    assert neuron.loads == []


async def test_the_endpoint_of_a_model_loaded_elsewhere_is_asked_once(neuron, client):
    async with running_gateway(fleet_config(neuron)) as gw:
        sdk = client(gw.url)
        for _ in range(3):
            await sdk.chat.completions.create(model="org/a", messages=HI)
    assert neuron.endpoint_calls == 1


async def test_a_cold_request_waits_for_the_load_and_sees_no_early_answer(neuron):
    neuron.load_time = 0.5
    neuron.load_failures["org/b"] = (507, "out_of_memory")
    async with running_gateway(fleet_config(neuron)) as gw:
        status, _, body = await chat(gw.url, "org/b")
    assert status == 507  # not a 200 followed by an error: nothing was sent before the load
    assert body["error"]["code"] == "out_of_memory"


async def test_the_sdk_sees_a_load_refusal_as_an_api_error(neuron, client):
    neuron.load_failures["org/b"] = (422, "unsupported_model")
    async with running_gateway(fleet_config(neuron)) as gw:
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            await client(gw.url).chat.completions.create(model="org/b", messages=HI)
    assert json.loads(caught.value.response.text)["error"]["code"] == "unsupported_model"


async def test_a_load_slower_than_load_timeout_is_a_504(neuron):
    neuron.load_time = 5
    async with running_gateway(fleet_config(neuron, load_timeout_s=0.3)) as gw:
        status, _, body = await chat(gw.url, "org/b")
    assert (status, body["error"]["code"]) == (504, "upstream_timeout")


async def test_a_client_that_gives_up_on_a_cold_load_does_not_cancel_it(neuron, client):
    neuron.load_time = 0.5
    async with running_gateway(fleet_config(neuron)) as gw:
        with pytest.raises(openai.APITimeoutError):
            await client(gw.url, timeout=0.1).chat.completions.create(model="org/b", messages=HI)

        async def loaded() -> bool:
            return bool(neuron.models["org/b"].status == "loaded")

        await eventually(loaded)
        answer = await client(gw.url).chat.completions.create(model="org/b", messages=HI)
    assert answer.choices[0].message.content
    assert len(neuron.loads) == 1
