"""The official ``anthropic`` SDK against a real gateway and fake neurons on 127.0.0.1."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from aiohttp import web

from cortex_core import encode
from cortex_core.config import AuthOptions
from cortex_core.errors import CortexError, ErrorDetail, error_from_envelope
from cortex_gateway.testing import (
    PROMPT_TOKENS,
    FakeNeuron,
    eventually,
    fleet_config,
    running_gateway,
    scrape,
)
from cortex_gateway.testing.claude_code import claude_code as install_claude_code, claude_turn
from cortex_gateway.testing.neuron import Recorded
from cortex_gateway.testing.replies import token_count

Json = dict[str, Any]
HI: list[Any] = [{"role": "user", "content": "hi"}]
WEATHER: list[Any] = [
    {
        "name": "weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]
FIRST_USAGE = {"prompt_tokens": 31, "completion_tokens": 0, "total_tokens": 31}
USAGE = {
    "prompt_tokens": 31,
    "completion_tokens": 12,
    "total_tokens": 43,
    "prompt_tokens_details": {"cached_tokens": 16},
}


def _tool(index: int, ident: str | None, name: str | None, arguments: str) -> Json:
    function: Json = {"arguments": arguments}
    if name is not None:
        function["name"] = name
    call: Json = {"index": index, "type": "function", "function": function}
    if ident is not None:
        call["id"] = ident
    return {"tool_calls": [call]}


# What vLLM streams for a reasoning model calling two tools: arguments split across chunks.
SCRIPT: list[Json] = [
    {"reasoning_content": "The user wants "},
    {"reasoning_content": "two cities."},
    {"content": "Checking both."},
    _tool(0, "call_p", "weather", '{"city": '),
    _tool(0, None, None, '"Paris"}'),
    _tool(1, "call_r", "weather", '{"city"'),
    _tool(1, None, None, ': "Rome"}'),
]


def _whole(script: list[Json]) -> Json:
    """The non-streaming answer those chunks add up to."""
    text = "".join(d.get("content", "") for d in script)
    reasoning = "".join(d.get("reasoning_content", "") for d in script)
    calls: dict[int, Json] = {}
    for delta in script:
        for call in delta.get("tool_calls", ()):
            if call["index"] not in calls:
                function = {"name": "", "arguments": ""}
                calls[call["index"]] = {"id": call["id"], "type": "function", "function": function}
            whole = calls[call["index"]]
            whole["function"]["name"] += call["function"].get("name", "")
            whole["function"]["arguments"] += call["function"]["arguments"]
    said: Json = {"role": "assistant", "content": text or None, "reasoning_content": reasoning}
    if calls:
        said["tool_calls"] = list(calls.values())
    return said


class ScriptedNeuron(FakeNeuron):
    """A fake neuron whose chat answers follow :attr:`script` (streamed, or added up)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.script = SCRIPT
        self.finish = "tool_calls"
        self.keep_alives = 0

    async def _infer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        asked = json.loads(body)
        self.requests.append(Recorded(request.path, dict(request.headers), body))
        base = {"id": "chat7", "object": "chat.completion", "created": 0, "model": asked["model"]}
        if not asked.get("stream"):
            choice = {"index": 0, "message": _whole(self.script), "finish_reason": self.finish}
            return web.json_response({**base, "choices": [choice], "usage": USAGE})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(self.keep_alives):
            await response.write(b": keep-alive\n\n")

        async def chunk(delta: Json | None, finish: str | None = None, **extra: Any) -> None:
            choices = (
                [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
            )
            event = {**base, "object": "chat.completion.chunk", "choices": choices, **extra}
            await response.write(b"data: " + encode(event) + b"\n\n")

        continuous = asked["stream_options"].get("continuous_usage_stats")
        first: Json = {"usage": FIRST_USAGE} if continuous else {}
        await chunk({"role": "assistant", "content": ""}, None, **first)
        for delta in self.script:
            await chunk(delta)
        await chunk({}, self.finish)
        await chunk(None, usage=USAGE)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


@asynccontextmanager
async def sdk(
    neuron: FakeNeuron, **auth: Any
) -> AsyncIterator[tuple[anthropic.AsyncAnthropic, str]]:
    key = auth.pop("key", "none")
    options = AuthOptions(**auth) if auth else None
    async with (
        running_gateway(fleet_config(neuron, auth=options)) as gw,
        anthropic.AsyncAnthropic(base_url=gw.url, api_key=key, max_retries=0) as client,
    ):
        yield client, gw.metrics_url


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedNeuron]:
    fake = ScriptedNeuron(["org/a", "org/b"], loaded=["org/a"])
    async with fake:
        yield fake


async def test_a_text_answer(neuron: FakeNeuron):
    async with sdk(neuron) as (client, _):
        reply = await client.messages.create(
            model="org/a", max_tokens=3, system="Be brief.", messages=HI
        )
    assert [b.type for b in reply.content] == ["text"]
    assert reply.content[0].type == "text"
    assert reply.content[0].text == "tok0 tok1 tok2 "
    assert reply.stop_reason == "end_turn"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (PROMPT_TOKENS, 3)
    assert (reply.model, reply.role) == ("org/a", "assistant")
    sent = json.loads(neuron.requests[0].body)
    assert neuron.requests[0].path == "/v1/chat/completions"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]


async def test_tool_use_and_thinking_with_the_stream_equal_to_the_answer(scripted: ScriptedNeuron):
    async with sdk(scripted) as (client, metrics_url):
        asked: Any = {
            "model": "org/a",
            "max_tokens": 8000,
            "messages": HI,
            "tools": WEATHER,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
        }
        reply = await client.messages.create(**asked)
        async with client.messages.stream(**asked) as stream:
            streamed = await stream.get_final_message()
        samples = await scrape(metrics_url)
    assert [b.type for b in reply.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert reply.content[0].type == "thinking"
    assert reply.content[0].thinking == "The user wants two cities."
    calls = [b for b in reply.content if b.type == "tool_use"]
    assert [(c.id, c.name, c.input) for c in calls] == [
        ("call_p", "weather", {"city": "Paris"}),
        ("call_r", "weather", {"city": "Rome"}),
    ]
    assert reply.stop_reason == "tool_use"
    assert reply.usage.cache_read_input_tokens == 16
    assert streamed.model_dump(exclude={"id"}) == reply.model_dump(exclude={"id"})
    stream_body = json.loads(scripted.requests[1].body)
    assert stream_body["stream_options"]["include_usage"] is True
    assert stream_body["tools"][0]["function"]["name"] == "weather"
    ttft = frozenset({("model", "org/a"), ("node", "n1")})
    assert samples[("cortex_time_to_first_token_seconds_count", ttft)] == 1


async def test_a_tool_result_turn_goes_back_as_a_tool_message(scripted: ScriptedNeuron):
    scripted.script, scripted.finish = [{"content": "Sunny."}], "stop"
    turns: Any = [
        *HI,
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "call_p", "name": "weather", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "call_p", "content": "20C"}],
        },
    ]
    async with sdk(scripted) as (client, _):
        reply = await client.beta.messages.create(  # ?beta=true, as Claude Code calls it
            model="org/a", max_tokens=100, messages=turns, tools=WEATHER
        )
    assert reply.content[0].type == "text"
    assert reply.content[0].text == "Sunny."
    sent = json.loads(scripted.requests[0].body)
    assert sent["messages"][-1] == {"role": "tool", "tool_call_id": "call_p", "content": "20C"}


async def test_the_raw_stream_pings_for_keep_alives_and_takes_anthropic_headers(
    scripted: ScriptedNeuron,
):
    scripted.keep_alives = 2
    body = {"model": "org/a", "max_tokens": 5, "messages": HI, "stream": True}
    headers = {
        "x-api-key": "k",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
    }
    config = fleet_config(scripted, auth=AuthOptions(api_keys=("k",)))
    async with running_gateway(config) as gw, httpx.AsyncClient() as http:
        resp = await http.post(gw.url + "/v1/messages?beta=true", json=body, headers=headers)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/event-stream"
    names = [line[7:] for line in resp.text.splitlines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "ping", "ping"]
    assert names.count("message_start") == 1
    assert names[-2:] == ["message_delta", "message_stop"]
    # thinking was not asked for: the reasoning is dropped, text and tools remain
    starts = [
        json.loads(line[6:]) for line in resp.text.splitlines() if '"content_block_start"' in line
    ]
    assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use", "tool_use"]
    assert [s["index"] for s in starts] == [0, 1, 2]


async def test_count_tokens_is_exact_where_loaded_and_an_estimate_elsewhere(neuron: FakeNeuron):
    async with sdk(neuron) as (client, _):
        exact = await client.messages.count_tokens(
            model="org/a", system="s", messages=HI, tools=WEATHER
        )
        estimate = await client.messages.count_tokens(model="org/b", messages=HI)
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.count_tokens(model="org/nope", messages=HI)
    assert exact.input_tokens == token_count(neuron.tokenized[0])  # the neuron's own count
    assert exact.model_extra == {}
    assert neuron.tokenized[0].messages == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "hi"},
    ]
    assert estimate.input_tokens > 0
    assert estimate.model_extra == {"estimated": True}
    assert neuron.loads == []  # counting never loads a model
    assert [t.model for t in neuron.tokenized] == ["org/a"]


async def test_an_invalid_body_is_a_400_naming_the_field(neuron: FakeNeuron):
    bad: Any = [{"role": "user", "content": [{"type": "video", "url": "x"}]}]
    async with sdk(neuron) as (client, _):
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.create(model="org/a", max_tokens=3, messages=bad)
    assert caught.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "Invalid value 'video' - at `$.messages[0].content[0].type`",
        },
    }
    assert neuron.requests == []


async def test_a_wrong_key_is_an_authentication_error(neuron: FakeNeuron):
    async with sdk(neuron, api_keys=("right",), key="wrong") as (client, _):
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await client.messages.create(model="org/a", max_tokens=3, messages=HI)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "authentication_error"


async def test_an_unknown_model_is_not_found(neuron: FakeNeuron):
    async with sdk(neuron) as (client, _):
        with pytest.raises(anthropic.NotFoundError) as caught:
            await client.messages.create(model="org/unknown", max_tokens=3, messages=HI)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "not_found_error"


def _refusal(
    status: int, code: str, message: str = "no", retry_after: float | None = None
) -> CortexError:
    """The error a neuron answers with: its typed envelope, as the double sends it."""
    detail = ErrorDetail(message=message, type="x", code=code)
    return error_from_envelope(status, detail, retry_after=retry_after)


@pytest.mark.parametrize(
    ("status", "code", "error", "kind"),
    [
        (429, "rate_limit_exceeded", anthropic.RateLimitError, "rate_limit_error"),
        (503, "service_unavailable", anthropic.ServiceUnavailableError, "overloaded_error"),
        (507, "out_of_memory", anthropic.OverloadedError, "overloaded_error"),
    ],
)
async def test_neuron_refusals_are_the_sdks_error_classes(
    neuron: FakeNeuron, status: int, code: str, error: type[anthropic.APIStatusError], kind: str
):
    neuron.infer_error = _refusal(status, code, retry_after=3)
    async with sdk(neuron) as (client, _):
        with pytest.raises(error) as caught:
            await client.messages.create(model="org/a", max_tokens=3, messages=HI)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == kind
    assert caught.value.response.headers["retry-after"] == "3"


async def test_a_prompt_over_the_context_says_prompt_is_too_long(neuron: FakeNeuron):
    words = (
        "This model's maximum context length is 4096 tokens. However, your prompt contains 5000 "
        "input tokens."
    )
    neuron.infer_error = _refusal(400, "context_length_exceeded", words)
    async with sdk(neuron) as (client, _):
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.create(model="org/a", max_tokens=3, messages=HI)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "prompt is too long: 5000 tokens > 4096 maximum",
    }


async def test_an_upstream_that_dies_mid_stream_is_an_error_event(neuron: FakeNeuron):
    neuron.die_after = 1
    async with sdk(neuron) as (client, metrics_url):
        async with client.messages.stream(model="org/a", max_tokens=3, messages=HI) as stream:
            with pytest.raises(anthropic.APIStatusError) as caught:
                await stream.get_final_message()
        errors = (
            "cortex_request_errors_total",
            frozenset({("model", "org/a"), ("node", "n1"), ("kind", "upstream_error")}),
        )

        async def counted() -> bool:
            return (await scrape(metrics_url)).get(errors) == 1

        await eventually(counted)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "api_error"
    assert "broke the connection" in caught.value.body["error"]["message"]


async def test_a_model_not_loaded_is_loaded_on_demand(neuron: FakeNeuron):
    async with sdk(neuron) as (client, _):
        reply = await client.messages.create(model="org/b", max_tokens=2, messages=HI)
    assert [spec.model_id for spec in neuron.loads] == ["org/b"]
    assert reply.usage.output_tokens == 2


class BrokenTokenizer(FakeNeuron):
    """A neuron whose ``/tokenize`` fails as a broken proxy would."""

    async def _tokenize(self, request: web.Request) -> web.Response:
        return web.Response(status=502, text="bad gateway")


async def test_count_tokens_estimates_when_the_neuron_cannot_count():
    async with BrokenTokenizer(["org/a"], loaded=["org/a"]) as broken, sdk(broken) as (client, _):
        counted = await client.messages.count_tokens(model="org/a", messages=HI)
        raw = await client.messages.with_raw_response.count_tokens(model="org/a", messages=HI)
    assert counted.model_extra == {"estimated": True}
    assert raw.headers["cortex-token-count"] == "estimate"


@pytest.fixture(scope="session")
def claude_code() -> Path:
    """Claude Code's ``claude``, installed from npm into the repository's .cache when missing."""
    return install_claude_code(Path(__file__).resolve().parents[3] / ".cache")


@pytest.mark.slow
async def test_claude_code_runs_a_turn_unmodified(
    scripted: ScriptedNeuron, claude_code: Path, tmp_path: Path
):
    scripted.script, scripted.finish = [{"content": "Hi "}, {"content": "there!"}], "stop"
    scripted.keep_alives = 1
    async with running_gateway(fleet_config(scripted)) as gw:
        code, out, err = await claude_turn(claude_code, gw.url, "org/a", tmp_path)
    assert code == 0, err
    assert out.strip() == "Hi there!"
    sent = json.loads(scripted.requests[-1].body)
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert sent["max_tokens"] == 32000
    assert sent["stream_options"]["include_usage"] is True
    assert sent["tools"]
