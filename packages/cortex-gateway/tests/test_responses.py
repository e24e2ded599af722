"""``/v1/responses`` end to end: the openai SDK → gateway → fake neuron, over loopback sockets."""

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import aiohttp
import openai
import pytest

from cortex_core.config import AuthOptions, ModelProfile, ModelsConfig
from cortex_core.errors import RateLimitError, UpstreamError
from cortex_core.wire.inference import Usage
from cortex_gateway.inference.responses import ResponsesCall, ResponsesRelay
from cortex_gateway.testing import (
    PROMPT_TOKENS,
    eventually,
    fleet_config,
    running_gateway,
    scrape,
)

pytestmark = pytest.mark.timeout(30)

MODELS = ModelsConfig(models=(ModelProfile(id="org/b", vram_mb=2000, aliases=("bee",)),))
A1 = frozenset({("model", "org/a"), ("node", "n1")})


async def post(url: str, body: bytes | dict[str, Any], **headers: str) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers.setdefault("content-type", "application/json")
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/responses", data=data, headers=headers) as r,
    ):
        return r.status, await r.read()


async def test_responses_create_through_the_sdk(neuron, client):
    async with running_gateway(fleet_config(neuron)) as gw:
        reply = await client(gw.url).responses.create(
            model="org/a", input="hi", instructions="be brief", max_output_tokens=2
        )
        samples = await scrape(gw.metrics_url)
    assert reply.output_text == "tok0 tok1 "
    assert reply.instructions == "be brief"
    assert reply.usage is not None
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (PROMPT_TOKENS, 2)
    assert json.loads(neuron.requests[-1].body)["max_output_tokens"] == 2
    assert samples[("cortex_prompt_tokens_total", A1)] == PROMPT_TOKENS
    assert samples[("cortex_completion_tokens_total", A1)] == 2
    assert samples[("cortex_requests_total", A1 | {("status", "200")})] == 1


async def test_responses_stream_through_the_sdk(neuron, client):
    async with running_gateway(fleet_config(neuron)) as gw:
        stream = await client(gw.url).responses.create(
            model="org/a", input="hi", max_output_tokens=4, stream=True
        )
        events = [event async for event in stream]
        samples = await scrape(gw.metrics_url)
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["tok0 ", "tok1 ", "tok2 ", "tok3 "]
    assert events[-1].response.output_text == "tok0 tok1 tok2 tok3 "
    assert samples[("cortex_completion_tokens_total", A1)] == 4
    assert samples[("cortex_prompt_tokens_total", A1)] == PROMPT_TOKENS
    assert samples[("cortex_time_to_first_token_seconds_count", A1)] == 1
    assert samples[("cortex_tokens_per_second_count", A1)] == 1
    assert b"stream_options" not in neuron.requests[-1].body  # no chat edit on this route


async def test_an_alias_is_resolved_and_the_model_loaded_on_demand(neuron, client):
    async with running_gateway(fleet_config(neuron), MODELS) as gw:
        reply = await client(gw.url).responses.create(model="bee", input="hi")
    assert reply.output_text == "tok0 tok1 tok2 "
    assert [spec.model_id for spec in neuron.loads] == ["org/b"]
    assert json.loads(neuron.requests[-1].body)["model"] == "org/b"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"background": True}, "background"),
    ],
)
async def test_stateful_requests_are_refused_before_routing(neuron, extra, param):
    async with running_gateway(fleet_config(neuron), MODELS) as gw:
        status, body = await post(gw.url, {"model": "bee", "input": "hi", **extra})
    assert status == 400
    error = json.loads(body)["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert neuron.requests == []
    assert neuron.loads == []  # nothing loaded for a request no neuron would serve


async def test_bad_bodies_get_the_openai_envelope(neuron):
    async with running_gateway(fleet_config(neuron)) as gw:
        status, body = await post(gw.url, b'{"input": "hi"}')
        unknown, missing = await post(gw.url, {"model": "org/nope", "input": "hi"})
    assert status == 400
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert unknown == 404
    assert json.loads(missing)["error"]["code"] == "model_not_found"


async def test_the_neurons_refusal_passes_through_with_retry_after(neuron, client):
    neuron.infer_error = RateLimitError("busy", retry_after=3)
    async with running_gateway(fleet_config(neuron)) as gw:
        with pytest.raises(openai.RateLimitError) as caught:
            await client(gw.url).responses.create(model="org/a", input="hi")
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.code == "rate_limit_exceeded"


async def test_auth_refuses_in_the_openai_shape(neuron, client):
    config = fleet_config(neuron, auth=AuthOptions(api_keys=("sk-1",)))
    async with running_gateway(config) as gw:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client(gw.url, api_key="wrong").responses.create(model="org/a", input="hi")
        reply = await client(gw.url, api_key="sk-1").responses.create(model="org/a", input="hi")
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "invalid_request_error" or caught.value.code
    assert reply.output_text


async def test_model_not_loaded_is_retried_once_before_the_first_byte(neuron, client):
    neuron.races["org/a"] = 1
    async with running_gateway(fleet_config(neuron)) as gw:
        stream = await client(gw.url).responses.create(model="org/a", input="hi", stream=True)
        kinds = [event.type async for event in stream]
    assert kinds[-1] == "response.completed"
    assert len(neuron.requests) == 2


async def test_a_stream_cut_mid_way_ends_with_an_error_event(neuron, client):
    neuron.die_after = 2
    async with running_gateway(fleet_config(neuron)) as gw:
        stream = await client(gw.url).responses.create(model="org/a", input="hi", stream=True)
        events = [event async for event in stream]
        samples = await scrape(gw.metrics_url)
    assert [e.type for e in events] == [
        "response.created",
        "response.output_text.delta",
        "response.output_text.delta",
        "error",
    ]
    last = events[-1]
    assert last.sequence_number == events[-2].sequence_number + 1
    assert last.code == "upstream_error"
    assert "broke the connection" in last.message
    errors = ("cortex_request_errors_total", A1 | {("kind", "upstream_error")})
    assert samples[errors] == 1


async def test_a_stream_that_ends_before_response_completed_gets_an_error_event(neuron, client):
    neuron.send_done = False
    async with running_gateway(fleet_config(neuron)) as gw:
        stream = await client(gw.url).responses.create(model="org/a", input="hi", stream=True)
        events = [event async for event in stream]
    assert events[-2].type == "response.output_text.delta"
    assert events[-1].type == "error"
    assert events[-1].message == "neuron n1 ended the stream before response.completed"


async def test_a_client_that_leaves_mid_stream_aborts_at_the_neuron(neuron, client):
    neuron.chunks, neuron.chunk_interval = 200, 0.05
    async with running_gateway(fleet_config(neuron)) as gw:
        stream = await client(gw.url).responses.create(model="org/a", input="hi", stream=True)
        async for event in stream:
            if event.type == "response.output_text.delta":
                break
        await stream.close()
        await asyncio.wait_for(neuron.abort_seen.wait(), 5)
    assert neuron.aborted == 1


async def test_an_aborted_request_at_the_neuron_reaches_the_client_as_its_error_event(neuron):
    neuron.chunks, neuron.hang_after = 5, 1
    async with running_gateway(fleet_config(neuron)) as gw:
        body = {"model": "org/a", "input": "hi", "stream": True}
        task = asyncio.create_task(post(gw.url, body))

        async def admitted_one() -> bool:
            return bool(neuron.models["org/a"].admitted)

        await eventually(admitted_one)
        (admitted,) = neuron.models["org/a"].admitted
        admitted.abort(RateLimitError("unloading"))
        status, raw = await task
    assert status == 200
    payloads = [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]
    assert payloads[-1]["type"] == "error"
    assert payloads[-1]["message"] == "unloading"
    assert raw.count(b"event: error") == 1  # the neuron's end is an end: none added


def ended(relay: ResponsesRelay) -> bool:
    return relay.done


async def test_the_relay_reads_split_crlf_and_comment_events():
    sent: list[bytes] = []
    first: list[bool] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["body"])

    relay = ResponsesRelay(send, on_first_token=lambda: first.append(True))
    await relay.feed(b": keep-alive\n\n")
    await relay.feed(b'event: response.created\r\ndata: {"type": "response.created",')
    await relay.feed(b' "sequence_number": 0}\r\n\r\ndata: not json\n\n')
    await relay.feed(b'data: {"type": "response.output_text.delta", "sequence_number": 1}\n\n')
    await relay.feed(b'data: {"type": "response.output_text.delta", "sequence_number": 2}\n\n')
    assert first == [True]
    assert not ended(relay)
    await relay.feed(b'data: {"type": "response.incomplete", "sequence_number": 3,')
    await relay.finish()  # half an event is dropped, not sent
    assert not ended(relay)
    assert b"".join(sent).count(b"data:") == 4
    usage = b'"response": {"usage": {"input_tokens": 2, "output_tokens": 5, "total_tokens": 7}}'
    await relay.feed(b'data: {"type": "response.completed", ' + usage + b"}\n\n")
    assert ended(relay)
    assert relay.usage == Usage(prompt_tokens=2, completion_tokens=5, total_tokens=7)


def test_a_whole_answer_without_usage_counts_nothing_and_one_not_json_is_a_502():
    """Issue 14: a 200 the client could not read is the neuron's failure, not passed on."""
    call = ResponsesCall(b'{"model": "org/a", "input": "hi"}')
    with pytest.raises(UpstreamError, match="not its JSON"):
        call.answer(200, b"not json", "application/json")
    answer, none = call.answer(200, b'{"id": "resp_1"}', "application/json")
    assert (answer.body, none) == (b'{"id": "resp_1"}', None)
    assert call.upstream_body("org/a") == b'{"model": "org/a", "input": "hi"}'
    assert not call.streaming
