"""DESIGN §3 as one contract: the same requests against the real neuron (its fake engine, in
this process) and against the gateway's double (`cortex_gateway.testing.FakeNeuron`), with the
same status codes, envelopes, states and fields. A test that passes only on one side is a
divergence: fix the double, or the neuron, or the contract (docs/design.md, Amendments)."""

import asyncio
import json
from typing import Any

import httpx
import pytest

from cortex_core.errors import ErrorDetail, error_from_envelope
from cortex_core.wire.control import ModelInfo

# The `target` fixture (tests/integration/conftest.py): each test runs once against each side.
DEVICE_MB = 1000

pytestmark = pytest.mark.timeout(30)

MODEL_FIELDS = set(ModelInfo.__struct_fields__)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    expected = error_from_envelope(status, ErrorDetail(message="", type="", code=code))
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["type"]) == (code, expected.error_type)
    assert isinstance(error["message"], str)
    assert error["message"]
    return dict(error)


async def model(target: Any, model_id: str = "org/a") -> dict[str, Any]:
    listed = (await target.http.get("/models")).json()
    assert all(set(m) == MODEL_FIELDS for m in listed)
    (found,) = [m for m in listed if m["id"] == model_id]
    return dict(found)


async def health(target: Any) -> dict[str, Any]:
    response = await target.http.get("/health")
    assert response.status_code == 200
    return dict(response.json())


async def until(check: Any, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - the state is the server's
            await asyncio.sleep(0.01)


def chat(model_id: str = "org/a", **extra: Any) -> dict[str, Any]:
    return {"model": model_id, "messages": [{"role": "user", "content": "hi"}], **extra}


async def test_health_is_open_and_every_other_route_needs_the_token(target):
    bare = httpx.AsyncClient(base_url=target.url)
    async with bare:
        assert (await bare.get("/health")).status_code == 200
        for method, path in [
            ("GET", "/discovery"),
            ("GET", "/models"),
            ("POST", "/models/load"),
            ("POST", "/models/unload"),
            ("GET", "/models/org/a/endpoint"),
            ("POST", "/tokenize"),
            ("GET", "/v1/models"),
            ("GET", "/metrics"),
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/completions"),
        ]:
            response = await bare.request(method, path, headers={"Authorization": "Bearer no"})
            assert_error(response, 401, "invalid_api_key")
            assert response.headers["www-authenticate"] == "Bearer"


async def test_a_load_goes_available_loading_loaded_with_every_field(target):
    before = await model(target)
    assert before == {
        "id": "org/a",
        "harness": "vllm",
        "status": "available",
        "devices": [],
        "memory_mb": None,
        "max_model_len": None,
        "loaded_at": None,
        "last_used": None,
        "in_flight": 0,
        "error": None,
    }
    target.slow_loads(0.3)
    loads = [
        asyncio.create_task(
            target.http.post("/models/load", json={"model_id": "org/a", "memory_mb": 300})
        )
        for _ in range(2)  # concurrent loads of one id share one load
    ]

    async def loading() -> bool:
        return bool((await model(target))["status"] == "loading")

    await until(loading)
    during = await model(target)
    assert (during["devices"], during["memory_mb"], during["loaded_at"]) == ([0], 300, None)
    assert (await health(target))["devices"][0]["memory_used_mb"] == 300
    for response in await asyncio.gather(*loads):
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "loaded"
        assert body["model"]["status"] == "loaded"
    after = await model(target)
    assert (after["status"], after["devices"], after["memory_mb"]) == ("loaded", [0], 300)
    assert isinstance(after["loaded_at"], float)
    assert isinstance(after["max_model_len"], int)
    again = await target.http.post("/models/load", json={"model_id": "org/a"})
    assert (again.status_code, again.json()["model"]["memory_mb"]) == (200, 300)
    report = await health(target)
    assert report["models"] == [{"id": "org/a", "in_flight": 0, "queued": 0}]
    assert report["draining"] is False
    assert report["activation"]["state"] == "ready"
    endpoint = await target.http.get("/models/org/a/endpoint")
    assert endpoint.json() == {"url": target.url}
    listed = (await target.http.get("/v1/models")).json()
    assert [m["id"] for m in listed["data"]] == ["org/a"]
    metrics = await target.http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")


async def test_a_load_without_memory_mb_takes_90_percent_of_the_device(target):
    response = await target.http.post("/models/load", json={"model_id": "org/a"})
    assert response.json()["model"]["memory_mb"] == DEVICE_MB * 9 // 10


@pytest.mark.parametrize(
    ("spec", "status", "code"),
    [
        ({"model_id": "../etc"}, 400, "invalid_model_id"),
        ({"model_id": "org/a", "harness": "tgi"}, 400, "invalid_spec"),
        ({"model_id": "org/a", "memory_mb": 0}, 400, "invalid_spec"),
        ({"model_id": "org/none"}, 404, "model_not_found"),
        ({"model_id": "org/a", "memory_mb": DEVICE_MB + 1}, 507, "out_of_memory"),
        ({"model": "org/a"}, 400, "invalid_request"),
    ],
)
async def test_a_refused_load_is_the_code_of_the_table(target, spec, status, code):
    assert_error(await target.http.post("/models/load", json=spec), status, code)
    assert (await health(target))["devices"][0]["memory_used_mb"] == 0


async def test_a_load_that_does_not_fit_beside_another_is_out_of_memory(target):
    first = await target.http.post("/models/load", json={"model_id": "org/a", "memory_mb": 600})
    assert first.status_code == 200
    second = await target.http.post("/models/load", json={"model_id": "org/b", "memory_mb": 600})
    assert_error(second, 507, "out_of_memory")
    assert (await model(target, "org/b"))["status"] == "available"


@pytest.mark.parametrize(("status", "code"), [(500, "load_failed"), (422, "unsupported_model")])
async def test_a_failed_load_marks_the_model_failed_and_the_next_load_retries(target, status, code):
    target.slow_loads(0.2)
    target.fail_loads("org/a", status, code)
    response = await target.http.post("/models/load", json={"model_id": "org/a"})
    assert_error(response, status, code)
    failed = await model(target)
    assert (failed["status"], failed["devices"], failed["memory_mb"]) == ("failed", [], None)
    assert failed["error"]
    assert (await health(target))["devices"][0]["memory_used_mb"] == 0
    target.heal_loads()
    retried = await target.http.post("/models/load", json={"model_id": "org/a"})
    assert retried.status_code == 200
    assert (await model(target))["error"] is None


async def test_an_unload_frees_the_model_and_its_memory(target):
    assert_error(
        await target.http.post("/models/unload", json={"model_id": "org/a"}),
        404,
        "model_not_loaded",
    )
    await target.http.post("/models/load", json={"model_id": "org/a", "memory_mb": 300})
    response = await target.http.post("/models/unload", json={"model_id": "org/a"})
    assert (response.status_code, response.json()) == (200, {"status": "unloaded"})
    after = await model(target)
    assert (after["status"], after["devices"], after["memory_mb"]) == ("available", [], None)
    assert (after["loaded_at"], after["max_model_len"]) == (None, None)
    assert (await health(target))["devices"][0]["memory_used_mb"] == 0
    assert (await health(target))["models"] == []


async def test_an_unload_during_a_load_waits_for_it_then_unloads(target):
    target.slow_loads(0.3)
    load = asyncio.create_task(target.http.post("/models/load", json={"model_id": "org/a"}))

    async def loading() -> bool:
        return bool((await model(target))["status"] == "loading")

    await until(loading)
    unload = await target.http.post("/models/unload", json={"model_id": "org/a"})
    assert unload.status_code == 200
    assert (await load).status_code == 200
    assert (await model(target))["status"] == "available"


async def test_unknown_and_unloaded_models_on_every_model_route(target):
    for model_id, code in (("org/none", "model_not_found"), ("org/b", "model_not_loaded")):
        assert_error(await target.http.get(f"/models/{model_id}/endpoint"), 404, code)
        assert_error(await target.http.post("/v1/chat/completions", json=chat(model_id)), 404, code)
        tokenize = await target.http.post("/tokenize", json={"model": model_id, "prompt": "x"})
        assert_error(tokenize, 404, code)
    invalid = await target.http.post("/v1/chat/completions", json=chat("../x"))
    assert_error(invalid, 400, "invalid_model_id")
    assert_error(await target.http.get("/nowhere"), 404, "not_found")


async def test_tokenize_counts_with_the_models_context(target):
    await target.http.post("/models/load", json={"model_id": "org/a", "max_model_len": 512})
    response = await target.http.post("/tokenize", json=chat() | {"model": "org/a"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "max_model_len"}
    assert body["max_model_len"] == 512
    assert body["count"] > 0


async def running(target: Any, in_flight: int, queued: int) -> None:
    async def seen() -> bool:
        models = (await health(target))["models"]
        return bool(models == [{"id": "org/a", "in_flight": in_flight, "queued": queued}])

    await until(seen)


async def test_busy_unload_is_409_and_force_ends_every_request_with_503(target):
    target.slow_answers(30)
    await target.http.post("/models/load", json={"model_id": "org/a"})
    whole = asyncio.create_task(target.http.post("/v1/chat/completions", json=chat()))
    await running(target, 1, 0)
    async with target.http.stream("POST", "/v1/chat/completions", json=chat(stream=True)) as stream:
        await running(target, 1, 1)  # one runs (concurrency 1), one waits (max_queued 1)
        full = await target.http.post("/v1/chat/completions", json=chat())
        assert_error(full, 429, "rate_limit_exceeded")
        assert full.headers["retry-after"] == "1"
        assert (await model(target))["in_flight"] == 2
        busy = await target.http.post("/models/unload", json={"model_id": "org/a"})
        assert_error(busy, 409, "model_busy")
        forced = await target.http.post("/models/unload", json={"model_id": "org/a", "force": True})
        assert forced.status_code == 200
        events = [line async for line in stream.aiter_lines() if line.startswith("data: ")]
    assert stream.status_code == 200
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2].removeprefix("data: "))["error"]["code"] == "service_unavailable"
    assert_error(await whole, 503, "service_unavailable")
    assert (await model(target))["status"] == "available"


async def test_a_drain_unload_waits_for_requests_then_unloads(target):
    target.slow_answers(0.5)
    await target.http.post("/models/load", json={"model_id": "org/a"})
    request = asyncio.create_task(target.http.post("/v1/chat/completions", json=chat()))
    await running(target, 1, 0)
    unload = asyncio.create_task(
        target.http.post("/models/unload", json={"model_id": "org/a", "drain": True})
    )

    async def unloading() -> bool:
        return bool((await model(target))["status"] == "unloading")

    await until(unloading)
    refused = await target.http.post("/v1/chat/completions", json=chat())
    assert_error(refused, 404, "model_not_loaded")
    assert (await request).status_code == 200  # it finished before the engine went
    assert (await unload).status_code == 200
    assert (await model(target))["status"] == "available"


async def test_a_stream_sends_keep_alive_during_a_long_prefill(target):
    target.slow_answers(1.5)
    await target.http.post("/models/load", json={"model_id": "org/a"})
    async with target.http.stream("POST", "/v1/chat/completions", json=chat(stream=True)) as stream:
        lines = [line async for line in stream.aiter_lines() if line]
    assert lines[0] == ": keep-alive"
    assert lines[-1] == "data: [DONE]"


async def test_an_engine_that_dies_fails_its_model_and_ends_its_stream_with_503(target):
    target.slow_answers(30)
    await target.http.post("/models/load", json={"model_id": "org/a"})
    async with target.http.stream("POST", "/v1/chat/completions", json=chat(stream=True)) as stream:
        await running(target, 1, 0)
        target.kill("org/a")
        events = [line async for line in stream.aiter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2].removeprefix("data: "))["error"]["code"] == "engine_failed"
    failed = await model(target)
    assert (failed["status"], failed["memory_mb"]) == ("failed", None)
    assert failed["error"]
    target.slow_answers(0)
    reloaded = await target.http.post("/models/load", json={"model_id": "org/a"})
    assert reloaded.json()["model"]["status"] == "loaded"
    answer = await target.http.post("/v1/chat/completions", json=chat(max_tokens=2))
    assert answer.json()["choices"][0]["message"]["content"].split() == ["tok0", "tok1"]


async def test_a_draining_neuron_refuses_loads_and_inference_with_503(target):
    await target.http.post("/models/load", json={"model_id": "org/a"})
    drain = target.drain()
    assert (await health(target))["draining"] is True
    load = await target.http.post("/models/load", json={"model_id": "org/b"})
    assert_error(load, 503, "shutting_down")
    assert load.headers["retry-after"] == "5"
    infer = await target.http.post("/v1/chat/completions", json=chat())
    assert_error(infer, 503, "shutting_down")
    await drain


def respond(model_id: str = "org/a", **extra: Any) -> dict[str, Any]:
    return {"model": model_id, "input": "hi", "max_output_tokens": 3, **extra}


def typed_events(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]


async def test_responses_answer_and_stream_alike(target):
    await target.http.post("/models/load", json={"model_id": "org/a"})
    whole = await target.http.post("/v1/responses", json=respond())
    assert whole.status_code == 200
    body = whole.json()
    assert (body["object"], body["status"]) == ("response", "completed")
    assert body["usage"]["output_tokens"] == 3
    assert body["usage"]["input_tokens"] > 0
    assert body["output"][0]["content"][0]["text"] == "tok0 tok1 tok2 "
    async with target.http.stream("POST", "/v1/responses", json=respond(stream=True)) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in stream.aiter_lines() if line]
    events = typed_events(lines)
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["usage"]["output_tokens"] == 3
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == ["tok0 ", "tok1 ", "tok2 "]
    numbers = [e["sequence_number"] for e in events]
    assert numbers == sorted(set(numbers))
    assert "data: [DONE]" not in lines
    refused = await target.http.post("/v1/responses", json=respond(previous_response_id="r"))
    assert assert_error(refused, 400, "invalid_request")["param"] == "previous_response_id"
    assert_error(
        await target.http.post("/v1/responses", json=respond("org/b")), 404, "model_not_loaded"
    )


async def test_a_forced_unload_ends_a_responses_stream_with_its_error_event(target):
    target.slow_answers(30)
    await target.http.post("/models/load", json={"model_id": "org/a"})
    async with target.http.stream("POST", "/v1/responses", json=respond(stream=True)) as stream:
        await running(target, 1, 0)
        forced = await target.http.post("/models/unload", json={"model_id": "org/a", "force": True})
        assert forced.status_code == 200
        lines = [line async for line in stream.aiter_lines() if line]
    assert "event: error" in lines
    last = typed_events(lines)[-1]
    assert (last["type"], last["code"]) == ("error", "service_unavailable")
    assert isinstance(last["sequence_number"], int)
    assert "data: [DONE]" not in lines
