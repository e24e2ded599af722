"""The Anthropic relay: OpenAI chunks in, Anthropic's exact event sequence out."""

import json
from collections.abc import MutableMapping
from typing import Any

from cortex_core import encode
from cortex_core.errors import UpstreamError
from cortex_gateway.inference.anthropic.stream import AnthropicRelay

Json = dict[str, Any]
DONE = b"data: [DONE]\n\n"


class Client:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        assert message["type"] == "http.response.body"
        assert message["more_body"] is True
        self.sent.append(message["body"])

    def events(self) -> list[tuple[str, Json]]:
        """Each event's name and data; the name must equal the data's ``type``."""
        out = []
        for raw in b"".join(self.sent).split(b"\n\n"):
            if not raw:
                continue
            name, data = raw.split(b"\n")
            assert name.startswith(b"event: ")
            assert data.startswith(b"data: ")
            payload = json.loads(data[6:])
            assert payload["type"] == name[7:].decode()
            out.append((name[7:].decode(), payload))
        return out

    def names(self) -> list[str]:
        return [name for name, _ in self.events()]


def relay(
    *, thinking: bool = True, stops: list[str] | None = None
) -> tuple[AnthropicRelay, Client, list[int]]:
    client, firsts = Client(), []
    made = AnthropicRelay(
        client, model="m", thinking=thinking, stops=stops, on_first_token=lambda: firsts.append(1)
    )
    return made, client, firsts


def chunk(
    delta: Json | None = None, finish: str | None = None, usage: Json | None = None, **choice: Any
) -> bytes:
    choices = (
        [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, **choice}]
    )
    body: Json = {"id": "c9", "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return b"data: " + encode(body) + b"\n\n"


def call(
    index: int, ident: str | None = None, name: str | None = None, arguments: str | None = None
) -> Json:
    function: Json = {}
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    tool: Json = {"index": index, "function": function}
    if ident is not None:
        tool["id"] = ident
    return {"tool_calls": [tool]}


USAGE = {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}
FIRST_USAGE = {"prompt_tokens": 20, "completion_tokens": 0, "total_tokens": 20}


async def test_thinking_text_and_two_split_tool_calls_make_the_exact_sequence():
    r, client, firsts = relay()
    stream = b"".join(
        [
            b": keep-alive\n\n",
            chunk({"role": "assistant", "content": ""}, usage=FIRST_USAGE),
            chunk({"reasoning_content": "Need "}),
            chunk({"reasoning_content": "tools."}),
            chunk({"content": "Sure."}),
            chunk(call(0, "call_a", "f", '{"x"')),
            chunk(call(0, arguments=": 1}")),
            chunk(call(1, "call_b", "g", "")),
            chunk(call(1, arguments="{}")),
            chunk({}, finish="tool_calls"),
            chunk(usage=USAGE),
            DONE,
        ]
    )
    for i in range(0, len(stream), 7):  # events split anywhere
        await r.feed(stream[i : i + 7])
    await r.finish()
    assert r.done
    assert firsts == [1]
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (20, 9)
    events = client.events()
    assert [(n, d.get("index")) for n, d in events] == [
        ("message_start", None),
        ("ping", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("content_block_start", 3),
        ("content_block_delta", 3),
        ("content_block_stop", 3),
        ("message_delta", None),
        ("message_stop", None),
    ]
    start = events[0][1]["message"]
    assert start["usage"] == {
        "input_tokens": 0,  # the keep-alive came before the first chunk
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert (start["content"], start["role"], start["model"]) == ([], "assistant", "m")
    assert events[2][1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert events[3][1]["delta"] == {"type": "thinking_delta", "thinking": "Need "}
    assert events[6][1]["content_block"] == {"type": "text", "text": ""}
    assert events[7][1]["delta"] == {"type": "text_delta", "text": "Sure."}
    assert events[9][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_a",
        "name": "f",
        "input": {},
    }
    partial = "".join(e[1]["delta"]["partial_json"] for e in events[10:12])
    assert json.loads(partial) == {"x": 1}
    assert events[13][1]["content_block"]["id"] == "call_b"
    assert events[14][1]["delta"] == {"type": "input_json_delta", "partial_json": "{}"}
    assert events[16][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[16][1]["usage"] == {
        "input_tokens": 20,
        "output_tokens": 9,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


async def test_message_start_carries_the_prompt_tokens_of_the_first_chunk():
    r, client, _ = relay()
    cached = {**FIRST_USAGE, "prompt_tokens_details": {"cached_tokens": 16}}
    await r.feed(chunk({"role": "assistant"}, usage=cached) + chunk({"content": "a"}))
    await r.feed(chunk({"content": "b"}) + chunk({}, finish="stop", stop_reason="END"))
    await r.feed(DONE)
    events = client.events()
    usage = events[0][1]["message"]["usage"]
    assert (usage["input_tokens"], usage["cache_read_input_tokens"]) == (20, 16)
    assert [n for n, _ in events].count("message_start") == 1
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert [e[1]["delta"]["text"] for e in events if e[0] == "content_block_delta"] == ["a", "b"]


async def test_a_stop_sequence_and_dropped_reasoning():
    r, client, firsts = relay(thinking=False, stops=["END"])
    await r.feed(chunk({"reasoning_content": "hidden"}))
    await r.feed(chunk({"content": "ok"}, finish="stop", stop_reason="END") + DONE)
    assert firsts == [1]  # reasoning is a token, shown or not
    names = client.names()
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert client.events()[4][1]["delta"] == {
        "stop_reason": "stop_sequence",
        "stop_sequence": "END",
    }
    assert r.usage is None  # the neuron reported none


async def test_an_empty_answer_still_has_start_delta_and_stop():
    r, client, firsts = relay()
    await r.feed(b"data: [DONE]")
    await r.finish()
    assert r.done
    assert firsts == []
    assert client.names() == ["message_start", "message_delta", "message_stop"]


async def test_crlf_events_and_data_after_the_end_are_ignored():
    r, client, _ = relay()
    await r.feed(chunk({"content": "x"}).replace(b"\n\n", b"\r\n\r\n") + b"event: x\r\n\r\n")
    await r.feed(DONE + chunk({"content": "late"}))
    await r.finish()
    assert client.names()[-1] == "message_stop"
    texts = [d["delta"]["text"] for n, d in client.events() if n == "content_block_delta"]
    assert texts == ["x"]


async def test_a_cut_stream_is_not_done_and_fail_sends_one_error_event():
    r, client, _ = relay()
    await r.feed(chunk({"content": "x"}) + b'data: {"choi')
    await r.finish()
    assert not r.done
    await r.fail(UpstreamError("neuron n1 broke the connection"))
    name, data = client.events()[-1]
    assert name == "error"
    assert data == {
        "type": "error",
        "error": {"type": "api_error", "message": "neuron n1 broke the connection"},
    }


async def test_an_error_event_of_the_neuron_ends_the_stream_with_an_error():
    r, client, _ = relay()
    await r.feed(chunk({"content": "x"}))
    await r.feed(
        b'data: {"error": {"message": "engine died", "type": "server_error", '
        b'"code": "engine_failed"}}\n\n' + DONE
    )
    assert r.done
    assert client.events()[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "engine died"}},
    )
    r2, client2, _ = relay()
    await r2.feed(b"data: [1, 2]\n\n")
    assert (
        client2.events()[-1][1]["error"]["message"]
        == "the neuron sent an event that is not a chunk"
    )
