"""Anthropic Messages ↔ OpenAI chat: real-world requests in, neuron answers back, errors."""

import json
from typing import Any

import msgspec
import pytest

from cortex_core import decode, encode
from cortex_core.errors import (
    ContextLengthExceededError,
    CortexError,
    InvalidRequestError,
    OutOfMemoryError,
    RateLimitError,
    UpstreamError,
)
from cortex_gateway.inference.anthropic.call import AnthropicCall
from cortex_gateway.inference.anthropic.errors import error_envelope, for_anthropic
from cortex_gateway.inference.anthropic.translate import message, stop_reason, tool_input
from cortex_gateway.inference.anthropic.types import MessagesRequest
from cortex_gateway.upstream import Refusal

Json = dict[str, Any]


def sent(request: Json, model_id: str = "org/a") -> Json:
    """The OpenAI body the neuron is sent for ``request``."""
    body: Json = json.loads(AnthropicCall(encode(request)).upstream_body(model_id))
    return body


def refused(request: Json) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        AnthropicCall(encode(request))
    return caught.value


BASE: Json = {"model": "m", "max_tokens": 10}
ONE: list[Json] = [{"role": "user", "content": "hi"}]  # the least a request may carry


def claude_code_request() -> Json:
    """What one ``claude -p`` turn sends (notes/claude-code.md), shortened but whole in shape."""
    schema = "https://json-schema.org/draft/2020-12/schema"
    tools: list[Json] = [
        {
            "name": f"Tool{i}",
            "description": f"tool {i}",
            "input_schema": {
                "$schema": schema,
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
                "additionalProperties": False,
            },
        }
        for i in range(11)
    ]
    tools.append(
        {"name": "Deferred", "description": "later", "input_schema": {}, "defer_loading": True}
    )
    ephemeral = {"type": "ephemeral"}
    return {
        "model": "org/a",
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332"},
            {"type": "text", "text": "You are Claude Code.", "cache_control": ephemeral},
            {"type": "text", "text": "Be brief.", "cache_control": ephemeral},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                    {"type": "text", "text": "say hi", "cache_control": ephemeral},
                ],
            },
            {"role": "system", "content": [{"type": "text", "text": "Mid-conversation note."}]},
        ],
        "tools": tools,
        "thinking": {"type": "adaptive", "display": "omitted"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "user_abc_account__session_1"},
        "temperature": 1,
    }


def test_the_claude_code_request_translates_to_one_system_message_and_all_tools():
    body = sent(claude_code_request())
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user"]
    system = body["messages"][0]["content"]
    assert system.startswith("x-anthropic-billing-header")
    assert "You are Claude Code.\n\nBe brief." in system
    assert system.endswith("Mid-conversation note.")
    assert body["messages"][1]["content"] == "<system-reminder>ctx</system-reminder>\n\nsay hi"
    assert len(body["tools"]) == 12
    assert body["tools"][0]["function"]["parameters"]["$schema"].endswith("2020-12/schema")
    assert body["tools"][11]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert body["max_tokens"] == 32000  # the neuron fits it, never the gateway
    assert body["stream"] is True
    assert body["stream_options"]["include_usage"] is True
    assert body["model"] == "org/a"
    for ignored in ("thinking", "output_config", "context_management", "metadata", "system"):
        assert ignored not in body


def test_a_multi_turn_tool_use_conversation_round_trips():
    body = sent(
        {
            **BASE,
            "system": "Use tools.",
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "two calls", "signature": "sig"},
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "t1",
                            "name": "weather",
                            "input": {"city": "Paris"},
                        },
                        {
                            "type": "tool_use",
                            "id": "t2",
                            "name": "weather",
                            "input": {"city": "Rome"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "18°C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "t2",
                            "content": [{"type": "text", "text": "no station"}],
                            "is_error": True,
                        },
                        {"type": "text", "text": "And tomorrow?"},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t3", "name": "weather", "input": {}}],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t3"}]},
            ],
            "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "auto"},
        }
    )
    assert body["messages"] == [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "t2",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "18°C"},
        {"role": "tool", "tool_call_id": "t2", "content": "Error: no station"},
        {"role": "user", "content": "And tomorrow?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "t3", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "t3", "content": ""},
    ]
    assert body["tools"] == [
        {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    ]
    assert body["tool_choice"] == "auto"
    assert "stream" not in body


def test_images_become_image_url_parts():
    body = sent(
        {
            **BASE,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is it?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x/y.jpg"}},
                    ],
                }
            ],
        }
    )
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is it?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
        {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ],
)
def test_tool_choice_maps_to_openai(choice: Json, expected: object):
    tools = [{"name": "f", "description": "does f", "input_schema": {"type": "object"}}]
    body = sent({**BASE, "messages": ONE, "tools": tools, "tool_choice": choice})
    assert body["tool_choice"] == expected
    assert body["tools"][0]["function"]["description"] == "does f"
    assert "parallel_tool_calls" not in body


def test_parallel_tool_use_can_be_disabled_and_server_tools_are_left_out():
    tools = [
        {"name": "f", "input_schema": {"type": "object"}, "type": "custom"},
        {"name": "web_search", "type": "web_search_20250305"},
    ]
    choice = {"type": "any", "disable_parallel_tool_use": True}
    body = sent({**BASE, "messages": ONE, "tools": tools, "tool_choice": choice})
    assert [t["function"]["name"] for t in body["tools"]] == ["f"]
    assert body["parallel_tool_calls"] is False
    only_server = sent({**BASE, "messages": ONE, "tools": tools[1:], "tool_choice": choice})
    assert "tools" not in only_server
    assert "tool_choice" not in only_server


def test_sampling_fields_pass_and_no_system_means_no_system_message():
    body = sent(
        {
            **BASE,
            "messages": [{"role": "user", "content": "hi"}],
            "stop_sequences": ["END"],
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "stream": False,
        }
    )
    assert body == {
        "model": "org/a",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 10,
        "stop": ["END"],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
    }


def test_an_assistant_turn_of_only_thinking_is_empty_text():
    turns = [
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]},
        {"role": "user", "content": "go on"},
    ]
    body = sent({**BASE, "messages": turns})
    assert body["messages"][0] == {"role": "assistant", "content": ""}


def test_system_turns_as_strings_merge_too():
    body = sent(
        {
            **BASE,
            "messages": [{"role": "system", "content": "A"}, {"role": "user", "content": "u"}],
            "system": "S",
        }
    )
    assert body["messages"] == [
        {"role": "system", "content": "S\n\nA"},
        {"role": "user", "content": "u"},
    ]


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        ({"model": "m", "messages": ONE}, None),  # missing max_tokens: named in the message
        ({**BASE, "messages": "hi"}, "messages"),
        ({**BASE, "max_tokens": "ten", "messages": ONE}, "max_tokens"),
        (
            {**BASE, "messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]},
            "messages[0].content[0].type",
        ),
        ({**BASE, "messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
        (
            {
                **BASE,
                "messages": [
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope"}]}
                ],
            },
            "messages[0].content[0].tool_use_id",
        ),
        (
            {
                **BASE,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}],
                    }
                ],
            },
            "messages[0].content[0].type",
        ),
        (
            {
                **BASE,
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "a"}]}
                ],
            },
            "messages[0].content[0].type",
        ),
        (
            {**BASE, "messages": ONE, "tools": [{"name": "f"}], "tool_choice": {"type": "tool"}},
            "tool_choice.name",
        ),
    ],
)
def test_invalid_requests_are_400_naming_the_field(request_: Json, param: str | None):
    error = refused(request_)
    assert error.status_code == 400
    assert error.param == param
    if param is None:
        assert "max_tokens" in error.message


def chat_answer(message_: Json, finish: str = "stop", **extra: Any) -> bytes:
    usage = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
    choice = {"index": 0, "message": {"role": "assistant", **message_}, "finish_reason": finish}
    return encode({"id": "c1", "choices": [{**choice, **extra}], "usage": usage})


def decoded(request: Json) -> MessagesRequest:
    return decode(encode({**BASE, "messages": ONE, **request}), MessagesRequest)


def test_an_answer_with_text_tool_calls_and_reasoning_translates_back():
    payload = chat_answer(
        {
            "content": "Let me look.",
            "reasoning_content": "I should call it.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a": 1}'},
                },
                {"type": "function", "function": {"name": "g", "arguments": "not json"}},
            ],
        },
        finish="tool_calls",
    )
    thinking = message(payload, "m", decoded({"thinking": {"type": "enabled", "budget_tokens": 9}}))
    assert msgspec.to_builtins(thinking) == {
        "type": "message",
        "id": "msg_c1",
        "role": "assistant",
        "model": "m",
        "content": [
            {"type": "thinking", "thinking": "I should call it.", "signature": ""},
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
            {
                "type": "tool_use",
                "id": "toolu_c1_1",
                "name": "g",
                "input": {"arguments": "not json"},
            },
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 11,
            "output_tokens": 4,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    plain = message(payload, "m", decoded({}))
    assert [type(b).__name__ for b in plain.content] == [
        "TextBlock",
        "ToolUseBlock",
        "ToolUseBlock",
    ]
    disabled = message(payload, "m", decoded({"thinking": {"type": "disabled"}}))
    assert len(disabled.content) == 3


def test_cached_prompt_tokens_are_a_cache_read():
    payload = encode(
        {
            "id": "c",
            "choices": [{"message": {"content": "x"}, "finish_reason": "length"}],
            "usage": {
                "prompt_tokens": 100,
                "completion_tokens": 10,
                "prompt_tokens_details": {"cached_tokens": 64},
            },
        }
    )
    reply = message(payload, "m", decoded({}))
    assert reply.stop_reason == "max_tokens"
    assert (reply.usage.input_tokens, reply.usage.cache_read_input_tokens) == (100, 64)


@pytest.mark.parametrize(
    ("finish", "matched", "expected"),
    [
        ("stop", None, ("end_turn", None)),
        ("stop", 151645, ("end_turn", None)),
        ("stop", "END", ("stop_sequence", "END")),
        ("stop", "other", ("end_turn", None)),
        ("length", None, ("max_tokens", None)),
        ("tool_calls", None, ("tool_use", None)),
        (None, None, ("end_turn", None)),
    ],
)
def test_stop_reasons_map(finish: str | None, matched: str | int | None, expected: object):
    assert stop_reason(finish, matched, ["END"]) == expected


def test_tool_input_keeps_what_is_not_an_object():
    assert tool_input(None) == {}
    assert tool_input("[1]") == {"arguments": [1]}


@pytest.mark.parametrize("payload", [b"nope", b'{"choices": []}', b'{"choices": [{}]}'])
def test_an_answer_that_is_not_a_chat_completion_is_an_upstream_error(payload: bytes):
    with pytest.raises(UpstreamError):
        message(payload, "m", decoded({}))


def envelope(exc: CortexError, status: int | None = None) -> Json:
    body: Json = json.loads(error_envelope(exc, status))
    return body


def test_errors_speak_anthropics_envelope_and_types():
    assert envelope(RateLimitError("slow down")) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }
    assert envelope(UpstreamError("x"))["error"]["type"] == "api_error"
    assert envelope(InvalidRequestError("x"), 413)["error"]["type"] == "request_too_large"
    overloaded = for_anthropic(OutOfMemoryError("full", retry_after=3))
    assert overloaded.status_code == 529
    assert overloaded.headers == {"Retry-After": "3"}
    assert envelope(overloaded)["error"]["type"] == "overloaded_error"
    kept = RateLimitError("x")
    assert for_anthropic(kept) is kept


@pytest.mark.parametrize(
    ("message_", "expected"),
    [
        (
            "This model's maximum context length is 4096 tokens. However, your prompt contains "
            "5000 input tokens.",
            "prompt is too long: 5000 tokens > 4096 maximum",
        ),
        (
            "This model's maximum context length is 8192 tokens. However, your request has 9000 "
            "input tokens. Please reduce the length of the input messages.",
            "prompt is too long: 9000 tokens > 8192 maximum",
        ),
        ("too long", "prompt is too long: too long"),
    ],
)
def test_a_prompt_over_the_context_reads_as_claude_code_expects(message_: str, expected: str):
    error = envelope(ContextLengthExceededError(message_))
    assert error["error"] == {"type": "invalid_request_error", "message": expected}


def test_a_neuron_refusal_comes_back_in_anthropics_envelope():
    call = AnthropicCall(encode({**BASE, "messages": ONE}))
    limit = RateLimitError("queue full", retry_after=2)
    answer = call.refusal(Refusal(429, b"{}", "application/json", limit))
    assert answer.status == 429
    assert (b"retry-after", b"2") in answer.headers
    assert json.loads(answer.body)["error"]["type"] == "rate_limit_error"
    full = call.refusal(Refusal(507, b"{}", "application/json", OutOfMemoryError("full")))
    assert full.status == 529
