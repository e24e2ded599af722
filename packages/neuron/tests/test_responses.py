"""``POST /v1/responses`` on the fake engine, through the openai SDK where a client is involved."""

import asyncio
import json
from typing import Any

import openai
import pytest

from cortex_core.errors import EngineFailedError
from cortex_neuron.engine.fake import FakeStarter
from cortex_neuron.responses import Sequenced


@pytest.fixture
async def loaded(neuron):
    await neuron.load(memory_mb=100, max_model_len=256)
    return neuron


def sdk(neuron) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{neuron.url}/v1", api_key="unused", max_retries=0)


async def _eventually(condition, seconds=5.0):
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


def _events(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data:")]


async def test_responses_create_with_the_sdk(loaded):
    async with sdk(loaded) as client:
        reply = await client.responses.create(
            model="org/alpha", input="hi there", instructions="be brief", max_output_tokens=3
        )
    assert reply.output_text == "tok0 tok1 tok2 "
    assert reply.status == "completed"
    assert reply.instructions == "be brief"
    assert reply.usage is not None
    # input: two words + 4, instructions: two words + 4
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (12, 3)
    text = (await loaded.http.get("/metrics")).text
    assert 'neuron_requests_total{model="org/alpha",route="responses",status="200"} 1.0' in text


async def test_responses_input_items_are_counted(loaded):
    async with sdk(loaded) as client:
        reply = await client.responses.create(
            model="org/alpha",
            input=[{"role": "user", "content": [{"type": "input_text", "text": "a b c"}]}],
            max_output_tokens=1,
        )
    assert reply.usage is not None
    assert reply.usage.input_tokens == 7


async def test_responses_stream_with_the_sdk(loaded):
    async with sdk(loaded) as client:
        stream = await client.responses.create(
            model="org/alpha", input="hi", max_output_tokens=4, stream=True
        )
        events = [event async for event in stream]
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["tok0 ", "tok1 ", "tok2 ", "tok3 "]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.usage is not None
    assert final.usage.output_tokens == 4
    assert final.output_text == "tok0 tok1 tok2 tok3 "


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"background": True}, "background"),
    ],
)
async def test_stateful_responses_are_refused_naming_the_field(loaded, extra, param):
    body = {"model": "org/alpha", "input": "hi", **extra}
    answer = await loaded.http.post("/v1/responses", json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert param in error["message"]
    assert not loaded.starter.engines["org/alpha"].running


async def test_store_is_accepted_and_not_kept(loaded):
    async with sdk(loaded) as client:
        reply = await client.responses.create(model="org/alpha", input="hi", store=True)
    assert reply.store is False


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "org/alpha"}, 400, "invalid_request"),
        ({"model": "org/alpha", "input": "hi", "max_output_tokens": 0}, 400, "invalid_request"),
        ({"model": "org/alpha", "input": "a " * 300}, 400, "context_length_exceeded"),
        ({"model": "org/unknown", "input": "hi"}, 404, "model_not_found"),
    ],
)
async def test_bad_responses_requests(loaded, body, status, code):
    answer = await loaded.http.post("/v1/responses", json=body)
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code


async def test_a_client_that_leaves_mid_stream_aborts_the_request(make_neuron):
    async with make_neuron(starter_=FakeStarter(token_delay=0.05)) as neuron:
        await neuron.load(memory_mb=100)
        engine = neuron.starter.engines["org/alpha"]
        body = {"model": "org/alpha", "input": "hi", "stream": True, "max_output_tokens": 500}
        async with neuron.http.stream("POST", "/v1/responses", json=body) as response:
            async for line in response.aiter_lines():
                if "response.output_text.delta" in line:
                    break
            assert engine.running
        await _eventually(lambda: not engine.running)
        await _eventually(lambda: neuron.ctx.lifecycle.activity()[0].in_flight == 0)
        text = (await neuron.http.get("/metrics")).text
        assert 'neuron_requests_total{model="org/alpha",route="responses",status="499"} 1.0' in text


async def test_a_failure_mid_stream_is_a_responses_error_event(make_neuron):
    async with make_neuron(starter_=FakeStarter(token_delay=0.05)) as neuron:
        await neuron.load(memory_mb=100)
        engine = neuron.starter.engines["org/alpha"]
        body = {"model": "org/alpha", "input": "hi", "stream": True, "max_output_tokens": 50}
        async with neuron.http.stream("POST", "/v1/responses", json=body) as response:
            lines = []
            async for line in response.aiter_lines():
                lines.append(line)
                if "response.output_text.delta" in line:
                    engine.kill()
        events = _events(lines)
        last = events[-1]
        assert last["type"] == "error"
        assert (last["code"], last["message"]) == (
            EngineFailedError.default_code,
            "the engine failed: the engine's process died",
        )
        assert last["sequence_number"] == events[-2]["sequence_number"] + 1
        assert "event: error" in lines
        assert "data: [DONE]" not in lines
        text = (await neuron.http.get("/metrics")).text
        assert 'neuron_requests_total{model="org/alpha",route="responses",status="503"} 1.0' in text


async def test_a_sequenced_stream_closes_what_cannot_be_closed_and_numbers_its_end():
    class Events:
        def __init__(self) -> None:
            self.left = [b"event: a\n\n", b"event: b\n\n"]

        def __aiter__(self) -> "Events":
            return self

        async def __anext__(self) -> bytes:
            if not self.left:
                raise StopAsyncIteration
            return self.left.pop(0)

    events = Sequenced(Events())
    assert [event async for event in events] == [b"event: a\n\n", b"event: b\n\n"]
    await events.aclose()  # no aclose to call: nothing happens
    end = events.error_event(EngineFailedError("gone"))
    assert json.loads(end.split(b"data: ", 1)[1])["sequence_number"] == 2
