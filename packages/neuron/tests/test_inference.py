"""OpenAI inference on the fake engine, through the openai SDK where a client is involved."""

import asyncio
import json
from typing import Any

import openai
import pytest

from cortex_neuron.engine.fake import FakeStarter


@pytest.fixture
async def loaded(neuron):
    await neuron.load(memory_mb=100, max_model_len=256)
    return neuron


def sdk(neuron) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{neuron.url}/v1", api_key="unused", max_retries=0)


def chat_body(**extra):
    return {"model": "org/alpha", "messages": [{"role": "user", "content": "hi there"}], **extra}


async def test_chat_with_the_sdk(loaded):
    async with sdk(loaded) as client:
        reply = await client.chat.completions.create(
            model="org/alpha", messages=[{"role": "user", "content": "hi there"}], max_tokens=3
        )
    assert reply.choices[0].message.content == "tok0 tok1 tok2"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (6, 3)


async def test_streamed_chat_with_the_sdk(loaded):
    async with sdk(loaded) as client:
        stream = await client.chat.completions.create(
            model="org/alpha",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 "
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4


async def test_completions_with_the_sdk(loaded):
    async with sdk(loaded) as client:
        reply = await client.completions.create(model="org/alpha", prompt="def main", max_tokens=2)
        assert reply.choices[0].text == "tok0 tok1"
        stream = await client.completions.create(
            model="org/alpha", prompt="def main", max_tokens=2, stream=True
        )
        texts = [chunk.choices[0].text async for chunk in stream]
    assert texts == ["tok0 ", "tok1 "]


async def test_max_tokens_beyond_the_context_is_lowered_to_fit(loaded):
    response = await loaded.http.post(
        "/v1/chat/completions", json={**chat_body(), "max_tokens": 32000}
    )
    assert response.status_code == 200
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] == 256


async def test_a_prompt_longer_than_the_context_is_refused(loaded):
    long = {"role": "user", "content": "word " * 300}
    response = await loaded.http.post(
        "/v1/chat/completions", json={"model": "org/alpha", "messages": [long]}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"model": ', 400, "invalid_request"),
        (b"[]", 400, "invalid_request"),
        (b'{"messages": []}', 400, "invalid_request"),
        (b'{"model": 5, "messages": []}', 400, "invalid_request"),
        (b'{"model": "../../etc/passwd", "messages": []}', 400, "invalid_model_id"),
        (b'{"model": "/etc", "messages": []}', 400, "invalid_model_id"),
        (b'{"model": "org/alpha", "messages": [], "stream": "yes"}', 400, "invalid_request"),
        (b'{"model": "org/alpha"}', 400, "invalid_request"),
        (b'{"model": "org/alpha", "messages": [], "max_tokens": -1}', 400, "invalid_request"),
        (b'{"model": "beta", "messages": []}', 404, "model_not_loaded"),
        (b'{"model": "org/nobody", "messages": []}', 404, "model_not_found"),
    ],
)
async def test_bad_chat_requests(loaded, body, status, code):
    response = await loaded.http.post("/v1/chat/completions", content=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert "Traceback" not in response.text
    assert (await loaded.http.get("/health")).status_code == 200


async def test_tools_without_a_parser_are_answered_as_text(loaded):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    body = {
        **chat_body(),
        "max_tokens": 2,
        "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    reply = (await loaded.http.post("/v1/chat/completions", json=body)).json()
    assert reply["choices"][0]["message"]["content"] == "tok0 tok1"


async def test_tools_with_a_parser_come_back_as_tool_calls(neuron):
    await neuron.load("beta", memory_mb=100, tool_call_parser="hermes")
    tools: list[Any] = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    async with sdk(neuron) as client:
        reply = await client.chat.completions.create(
            model="beta",
            messages=[{"role": "user", "content": "weather?"}],
            tools=tools,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
    (call,) = reply.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"


async def test_the_request_id_reaches_the_engine_and_comes_back(loaded):
    response = await loaded.http.post(
        "/v1/chat/completions", json=chat_body(), headers={"x-request-id": "req-42"}
    )
    assert response.headers["x-request-id"] == "req-42"
    assert response.json()["id"] == "chatcmpl-req-42"
    fresh = await loaded.http.post("/v1/chat/completions", json=chat_body())
    assert len(fresh.headers["x-request-id"]) == 32


async def test_keep_alive_comments_during_a_long_prefill(make_neuron):
    async with make_neuron(starter_=FakeStarter(first_token_delay=2.3)) as neuron:
        await neuron.load(memory_mb=100)
        body = {**chat_body(), "stream": True, "max_tokens": 1}
        async with neuron.http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = [line async for line in response.aiter_lines() if line]
    # comments until the first event (how many a loaded machine fits in is timing: not here),
    # and none after it
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    assert first_data >= 1
    assert set(lines[:first_data]) == {": keep-alive"}
    assert ": keep-alive" not in lines[first_data:]
    assert lines[-1] == "data: [DONE]"


async def test_a_client_that_disconnects_mid_stream_aborts_the_request(make_neuron):
    async with make_neuron(starter_=FakeStarter(token_delay=0.05)) as neuron:
        await neuron.load(memory_mb=100)
        engine = neuron.starter.engines["org/alpha"]
        body = {**chat_body(), "stream": True, "max_tokens": 500}
        async with neuron.http.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    break
            assert engine.running
        await _eventually(lambda: not engine.running)
        await _eventually(lambda: neuron.ctx.lifecycle.activity()[0].in_flight == 0)


async def test_a_client_that_disconnects_before_a_whole_answer_aborts_it(make_neuron):
    async with make_neuron(starter_=FakeStarter(token_delay=0.1)) as neuron:
        await neuron.load(memory_mb=100)
        engine = neuron.starter.engines["org/alpha"]
        body = {**chat_body(), "max_tokens": 100}
        request = asyncio.create_task(neuron.http.post("/v1/chat/completions", json=body))
        await _eventually(lambda: bool(engine.running))
        request.cancel()
        await _eventually(lambda: not engine.running)
        await _eventually(lambda: neuron.ctx.lifecycle.activity()[0].in_flight == 0)
        text = (await neuron.http.get("/metrics")).text
        assert 'neuron_requests_total{model="org/alpha",route="chat",status="499"} 1.0' in text


async def test_admission_refuses_beyond_the_queue_and_the_count_survives_cancels(make_neuron):
    starter = FakeStarter(token_delay=0.1, concurrency=1)
    async with make_neuron(starter_=starter) as neuron:
        await neuron.load(memory_mb=100)
        body = {**chat_body(), "max_tokens": 100}
        running = [
            asyncio.create_task(neuron.http.post("/v1/chat/completions", json=body))
            for _ in range(3)
        ]
        await _eventually(lambda: neuron.ctx.lifecycle.activity()[0].queued == 2)
        health = (await neuron.http.get("/health")).json()
        assert health["models"] == [{"id": "org/alpha", "in_flight": 1, "queued": 2}]
        refused = await neuron.http.post("/v1/chat/completions", json=body)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert refused.headers["retry-after"] == "1"
        for task in running:
            task.cancel()
        await _eventually(lambda: neuron.ctx.lifecycle.activity()[0].in_flight == 0)
        assert neuron.ctx.lifecycle.activity()[0].queued == 0
        assert (await neuron.http.post("/v1/chat/completions", json=chat_body())).status_code == 200
        text = (await neuron.http.get("/metrics")).text
        assert 'neuron_requests_rejected_total{model="org/alpha",reason="queue_full"} 1.0' in text


async def test_an_engine_error_mid_stream_is_an_error_event(loaded):
    engine = loaded.starter.engines["org/alpha"]

    async def broken(body, request_id):
        async def events():
            yield b'data: {"choices": []}\n\n'
            raise RuntimeError("boom")

        return events()

    engine.chat = broken
    body = {**chat_body(), "stream": True}
    async with loaded.http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = [line async for line in response.aiter_lines() if line.startswith("data:")]
    assert json.loads(lines[1].removeprefix("data: "))["error"]["message"] == (
        "the engine failed: RuntimeError"
    )
    assert lines[-1] == "data: [DONE]"


async def test_tokenize(loaded):
    by_messages = await loaded.http.post(
        "/tokenize", json={"model": "org/alpha", "messages": [{"role": "user", "content": "a b"}]}
    )
    assert by_messages.json() == {"count": 6, "max_model_len": 256}
    with_tools = await loaded.http.post(
        "/tokenize",
        json={
            "model": "org/alpha",
            "messages": [{"role": "user", "content": "a b"}],
            "tools": [{"type": "function", "function": {"name": "x"}}],
        },
    )
    assert with_tools.json()["count"] > 6
    by_prompt = await loaded.http.post("/tokenize", json={"model": "org/alpha", "prompt": "a b c"})
    assert by_prompt.json()["count"] == 3


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "beta", "prompt": "x"}, 404, "model_not_loaded"),
        ({"model": "ghost", "prompt": "x"}, 404, "model_not_found"),
        ({"model": "../x", "prompt": "x"}, 400, "invalid_model_id"),
        ({"prompt": "x"}, 400, "invalid_request"),
        ({"model": "org/alpha"}, 400, "invalid_request"),
    ],
)
async def test_bad_tokenize(loaded, body, status, code):
    response = await loaded.http.post("/tokenize", json=body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def _eventually(condition, seconds=5.0):
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


async def test_an_engine_error_during_a_stream_reaches_the_client(make_neuron):
    async with make_neuron(starter_=FakeStarter(token_delay=0.05)) as neuron:
        await neuron.load(memory_mb=100)
        body = {**chat_body(), "stream": True, "max_tokens": 200}
        async with neuron.http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("data:")
            neuron.starter.engines["org/alpha"].kill("worker lost")
            rest = [line async for line in lines if line.startswith("data:")]
        error = json.loads(rest[-2].removeprefix("data: "))["error"]
        assert error["code"] == "engine_failed"
        assert "worker lost" in error["message"]
        assert rest[-1] == "data: [DONE]"


async def test_a_forced_unload_ends_a_whole_answer_with_503(make_neuron):
    async with make_neuron(starter_=FakeStarter(token_delay=0.05)) as neuron:
        await neuron.load(memory_mb=100)
        pending = asyncio.create_task(
            neuron.http.post("/v1/chat/completions", json={**chat_body(), "max_tokens": 200})
        )
        await _eventually(lambda: bool(neuron.starter.engines["org/alpha"].running))
        unload = {"model_id": "org/alpha", "force": True}
        assert (await neuron.http.post("/models/unload", json=unload)).status_code == 200
        response = await pending
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "service_unavailable"


async def test_a_client_that_leaves_during_the_prefill_aborts_the_request(make_neuron):
    # the prefill outlasts every wait below: only an abort can end the request in time
    async with make_neuron(starter_=FakeStarter(first_token_delay=600)) as neuron:
        await neuron.load(memory_mb=100)
        engine = neuron.starter.engines["org/alpha"]
        body = {**chat_body(), "stream": True}
        async with neuron.http.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line == ": keep-alive":
                    break
        await _eventually(lambda: not engine.running)
        await _eventually(lambda: neuron.ctx.lifecycle.activity()[0].in_flight == 0)


async def test_an_empty_stream_still_ends_properly(loaded):
    class Nothing:
        def __aiter__(self):
            return self

        async def __anext__(self):
            raise StopAsyncIteration

    async def empty(body, request_id):
        return Nothing()

    loaded.starter.engines["org/alpha"].chat = empty
    body = {**chat_body(), "stream": True}
    async with loaded.http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert [line async for line in response.aiter_lines() if line] == []
