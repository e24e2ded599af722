"""The inference routes end to end: client → gateway → fake neuron, over real loopback sockets."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from cortex_core import encode
from cortex_core.config import ModelProfile, ModelsConfig
from cortex_core.errors import ContextLengthExceededError, RateLimitError, to_envelope
from cortex_gateway.testing import FakeNeuron, fleet_config, running_gateway

pytestmark = pytest.mark.timeout(30)

MODELS = ModelsConfig(models=(ModelProfile(id="org/b", vram_mb=2000, aliases=("bee",)),))
HI = [{"role": "user", "content": "hi"}]


async def post(
    url: str, body: bytes | dict[str, Any], **headers: str
) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers.setdefault("content-type", "application/json")
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/chat/completions", data=data, headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.read()


def events(raw: bytes) -> list[bytes]:
    return [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]


async def test_a_loaded_model_answers_through_the_sdk(neuron, client):
    async with running_gateway(fleet_config(neuron)) as gw:
        answer = await client(gw.url).chat.completions.create(model="org/a", messages=HI)
    assert answer.choices[0].message.content == "tok0 tok1 tok2 "
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 3
    assert neuron.loads == []


async def test_the_body_reaches_the_neuron_byte_for_byte(neuron):
    body = b'{ "model" : "org/a", "messages": [], "x_unknown": {"k": [1, 2.50]}, "t": "\\u00e9" }'
    async with running_gateway(fleet_config(neuron)) as gw:
        status, _, _ = await post(gw.url, body)
    assert status == 200
    assert neuron.requests[-1].body == body


async def test_an_alias_is_replaced_in_place_and_nothing_else_changes(neuron):
    body = b'{"model": "bee", "messages": [{"role": "user", "content": "model bee"}], "n": 1}'
    async with running_gateway(fleet_config(neuron), MODELS) as gw:
        status, _, _ = await post(gw.url, body)
    assert status == 200
    assert neuron.requests[-1].body == body.replace(b'"model": "bee"', b'"model":"org/b"')


async def test_the_usage_chunk_is_dropped_unless_the_client_asked(neuron, client):
    async with running_gateway(fleet_config(neuron)) as gw:
        sdk = client(gw.url)
        plain = [
            c
            async for c in await sdk.chat.completions.create(
                model="org/a", messages=HI, stream=True
            )
        ]
        asked = [
            c
            async for c in await sdk.chat.completions.create(
                model="org/a", messages=HI, stream=True, stream_options={"include_usage": True}
            )
        ]
    assert all(c.usage is None for c in plain)
    assert (
        "".join(c.choices[0].delta.content or "" for c in plain if c.choices) == "tok0 tok1 tok2 "
    )
    assert asked[-1].choices == []
    assert asked[-1].usage is not None
    assert asked[-1].usage.completion_tokens == 3
    # the neuron was asked for usage both times
    assert all(b'"include_usage":true' in r.body for r in neuron.requests)


async def test_a_silent_stream_is_cut_with_an_error_event(neuron):
    neuron.hang_after = 1
    async with running_gateway(fleet_config(neuron, idle_timeout_s=0.3)) as gw:
        status, headers, raw = await post(gw.url, {"model": "org/a", "stream": True})
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream"
    *chunks, error, done = events(raw)
    assert b"tok0 " in chunks[-1]
    assert json.loads(error)["error"]["code"] == "upstream_timeout"
    assert done == b"[DONE]"
    await asyncio.wait_for(neuron.abort_seen.wait(), 5)


async def test_a_long_stream_that_keeps_sending_is_not_cut(neuron):
    # 2 s in all, twice the idle timeout, but never silent for more than a tenth of it
    neuron.chunks, neuron.chunk_interval = 20, 0.1
    async with running_gateway(fleet_config(neuron, idle_timeout_s=1.0)) as gw:
        _, _, raw = await post(gw.url, {"model": "org/a", "stream": True})
    *chunks, done = events(raw)
    assert done == b"[DONE]"
    assert b"tok19 " in chunks[-2]
    assert b"error" not in raw


async def test_upstream_death_mid_stream_ends_with_an_error_event_and_done(neuron, client):
    neuron.die_after = 2
    async with running_gateway(fleet_config(neuron)) as gw:
        _, _, raw = await post(gw.url, {"model": "org/a", "stream": True})
        sdk_stream = await client(gw.url).chat.completions.create(
            model="org/a", messages=HI, stream=True
        )
        with pytest.raises(openai.APIError, match=r"broke the connection|before data"):
            async for _ in sdk_stream:
                pass
    *chunks, error, done = events(raw)
    assert b"tok1 " in chunks[-1]
    assert json.loads(error)["error"]["type"] == "upstream_error"
    assert done == b"[DONE]"


async def test_a_stream_the_neuron_ends_early_is_not_truncated_silently(neuron):
    neuron.chunks = 1
    neuron.die_after = 1  # the last content chunk was sent, then the connection closed
    async with running_gateway(fleet_config(neuron)) as gw:
        _, _, raw = await post(gw.url, {"model": "org/a", "stream": True})
    assert events(raw)[-2].startswith(b'{"error"')
    assert events(raw)[-1] == b"[DONE]"


async def test_a_stream_that_ends_without_done_gets_an_error_event(neuron):
    neuron.send_done = False
    async with running_gateway(fleet_config(neuron)) as gw:
        _, _, raw = await post(gw.url, {"model": "org/a", "stream": True})
    *chunks, error, done = events(raw)
    assert b"tok2 " in chunks[-2]
    assert json.loads(error)["error"]["message"] == "neuron n1 ended the stream before data: [DONE]"
    assert done == b"[DONE]"


async def test_a_client_gone_before_its_body_arrived_is_dropped_quietly(neuron):
    async with running_gateway(fleet_config(neuron)) as gw:
        host, port = gw.url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nContent-Length: 99\r\n\r\n{"
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        status, _, _ = await post(gw.url, {"model": "org/a"})
    assert status == 200
    assert len(neuron.requests) == 1


async def test_a_client_that_leaves_a_non_streaming_request_cancels_it_at_the_neuron(
    neuron, client
):
    neuron.latency = 30
    async with running_gateway(fleet_config(neuron)) as gw:
        with pytest.raises(openai.APITimeoutError):
            await client(gw.url, timeout=0.5).chat.completions.create(model="org/a", messages=HI)
        await asyncio.wait_for(neuron.abort_seen.wait(), 5)
    assert neuron.models["org/a"].active == 0


async def test_a_client_that_leaves_a_stream_cancels_it_at_the_neuron(neuron, client):
    neuron.hang_after = 2
    async with running_gateway(fleet_config(neuron)) as gw:
        stream = await client(gw.url).chat.completions.create(
            model="org/a", messages=HI, stream=True
        )
        seen = 0
        async for chunk in stream:
            seen += bool(chunk.choices and chunk.choices[0].delta.content)
            if seen == 2:
                break
        await stream.close()
        await asyncio.wait_for(neuron.abort_seen.wait(), 5)


async def test_a_slow_non_streaming_answer_times_out_with_504(neuron):
    neuron.latency = 30
    async with running_gateway(fleet_config(neuron, request_timeout_s=0.3)) as gw:
        status, _, body = await post(gw.url, {"model": "org/a"})
        await asyncio.wait_for(neuron.abort_seen.wait(), 5)
    assert status == 504
    assert json.loads(body)["error"]["code"] == "upstream_timeout"


async def test_a_large_body_is_refused_from_content_length_without_being_sent(neuron):
    async with running_gateway(fleet_config(neuron, max_body_bytes=1000)) as gw:
        host, port = gw.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)  # the gateway closes the connection
        writer.close()
    final = answer.split(b"HTTP/1.1 ")[-1]
    assert final.startswith(b"413 ")
    assert json.loads(final.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_too_large"
    assert neuron.requests == []


async def test_a_large_chunked_body_is_refused_while_it_arrives(neuron):
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 100

    async with (
        running_gateway(fleet_config(neuron, max_body_bytes=1000)) as gw,
        aiohttp.ClientSession() as session,
        session.post(gw.url + "/v1/chat/completions", data=chunks()) as r,
    ):
        status, body = r.status, await r.json()
    assert status == 413
    assert body["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (b"not json", 400, "invalid_request", None),
        (b"[1, 2]", 400, "invalid_request", None),
        (b'{"messages": []}', 400, "invalid_request", None),
        (b'{"model": 12}', 400, "invalid_request", "model"),
        (b'{"model": "../etc/passwd"}', 400, "invalid_model_id", "model"),
        (b'{"model": "org/unknown"}', 404, "model_not_found", "model"),
    ],
)
async def test_bad_requests_get_the_openai_envelope(neuron, body, status, code, param):
    async with running_gateway(fleet_config(neuron)) as gw:
        got, headers, raw = await post(gw.url, body, **{"content-length": str(len(body))})
    error = json.loads(raw)["error"]
    assert (got, error["code"], error["param"]) == (status, code, param)
    assert headers["Content-Type"] == "application/json"
    assert error["message"]


async def test_the_neurons_own_errors_pass_through_unchanged(neuron):
    # what a neuron sends: the typed envelope (vLLM's own error bodies never leave a neuron)
    too_long = ContextLengthExceededError("too long", param="input_tokens")
    neuron.infer_error = too_long
    async with running_gateway(fleet_config(neuron)) as gw:
        status, _, body = await post(gw.url, {"model": "org/a"})
        neuron.infer_error = RateLimitError("full", retry_after=3)
        busy, headers, _ = await post(gw.url, {"model": "org/a"})
    assert (status, body) == (400, encode(to_envelope(too_long)))
    assert (busy, headers["Retry-After"]) == (429, "3")


async def test_the_request_id_goes_through_to_the_neuron_and_back(neuron):
    async with running_gateway(fleet_config(neuron)) as gw:
        _, given, _ = await post(gw.url, {"model": "org/a"}, **{"x-request-id": "trace-42"})
        _, made, _ = await post(gw.url, {"model": "org/a"})
        _, replaced, _ = await post(gw.url, {"model": "org/a"}, **{"x-request-id": "has space"})
    assert given["X-Request-ID"] == "trace-42"
    assert neuron.requests[0].headers["x-request-id"] == "trace-42"
    assert len(made["X-Request-ID"]) == 32
    assert replaced["X-Request-ID"] != "has space"
    assert neuron.requests[1].headers["x-request-id"] == made["X-Request-ID"]


async def test_model_not_loaded_from_the_neuron_reroutes_once(neuron, client):
    neuron.races["org/a"] = 1
    async with running_gateway(fleet_config(neuron)) as gw:
        answer = await client(gw.url).chat.completions.create(model="org/a", messages=HI)
    assert answer.choices[0].message.content
    assert [spec.model_id for spec in neuron.loads] == ["org/a"]  # reloaded after the race
    assert len(neuron.requests) == 2


async def test_model_not_loaded_twice_passes_the_neurons_answer_through(neuron):
    neuron.races["org/a"] = 2
    async with running_gateway(fleet_config(neuron)) as gw:
        status, _, body = await post(gw.url, {"model": "org/a"})
    assert status == 404
    assert json.loads(body)["error"]["message"] == "The model `org/a` is not loaded here."
    assert len(neuron.requests) == 2


async def test_a_node_that_refuses_connections_is_skipped_once(client):
    async with (
        FakeNeuron(["org/a"], loaded=["org/a"]) as first,
        FakeNeuron(["org/a"], loaded=["org/a"]) as second,
        running_gateway(fleet_config(first, second, poll_interval_s=30)) as gw,
    ):
        await first.stop()
        answer = await client(gw.url).chat.completions.create(model="org/a", messages=HI)
    assert answer.choices[0].message.content
    assert len(second.requests) == 1


async def test_when_no_node_can_be_reached_the_client_gets_a_503(client):
    async with (
        FakeNeuron(["org/a"], loaded=["org/a"]) as first,
        FakeNeuron(["org/a"], loaded=["org/a"]) as second,
        running_gateway(fleet_config(first, second, poll_interval_s=30)) as gw,
    ):
        await first.stop()
        await second.stop()
        status, _, body = await post(gw.url, {"model": "org/a"})
    assert (status, json.loads(body)["error"]["code"]) == (503, "upstream_unavailable")


async def test_completions_stream_and_answer(neuron, client):
    async with running_gateway(fleet_config(neuron)) as gw:
        sdk = client(gw.url)
        answer = await sdk.completions.create(model="org/a", prompt="hi", max_tokens=2)
        stream = await sdk.completions.create(model="org/a", prompt="hi", stream=True)
        text = "".join([c.choices[0].text async for c in stream if c.choices])
    assert answer.choices[0].text == "tok0 tok1 "
    assert text == "tok0 tok1 tok2 "
    assert neuron.requests[0].path == "/v1/completions"
