"""The OpenAI dialect: the body's allowed edits, and the SSE relay that forwards events as they
complete, untouched, except the usage chunk not asked for."""

import json

import msgspec
import pytest

from cortex_core.errors import UpstreamError
from cortex_core.wire.inference import InferenceRequest
from cortex_gateway.inference.openai import StreamRelay, edit_body

ROLE = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
TOKEN = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
THINK = b'data: {"choices":[{"index":0,"delta":{"reasoning_content":"hmm"}}]}\n\n'
TOOL = b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]}}]}\n\n'
TEXT = b'data: {"choices":[{"index":0,"text":"Hi"}]}\n\n'
USAGE = (
    b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}\n\n'
)
INLINE = (
    b'data: {"choices":[{"delta":{"content":"x"}}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":1}}\n\n'
)
DONE = b"data: [DONE]\n\n"


def test_an_ambiguous_alias_is_overridden_by_a_last_member():
    body = b'{"metadata": {"model": "bee"}, "model": "bee"}'
    edited = edit_body(body, InferenceRequest(model="bee"), "org/b")
    assert edited == b'{"metadata": {"model": "bee"}, "model": "bee","model":"org/b"}'
    assert json.loads(edited)["model"] == "org/b"


def test_a_stream_asks_for_usage_keeping_the_clients_other_options():
    body = b'{"model": "m", "stream": true, "stream_options": {"continuous_usage_stats": true}}\n'
    request = msgspec.json.decode(body, type=InferenceRequest)
    edited = json.loads(edit_body(body, request, "m"))
    assert edited["stream_options"] == {"continuous_usage_stats": True, "include_usage": True}
    asked = b'{"model": "m", "stream": true, "stream_options": {"include_usage": true}}'
    request = msgspec.json.decode(asked, type=InferenceRequest)
    assert edit_body(asked, request, "m") == asked


class Client:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def __call__(self, message) -> None:
        assert message["type"] == "http.response.body"
        assert message["more_body"] is True
        self.sent.append(message["body"])

    @property
    def body(self) -> bytes:
        return b"".join(self.sent)


def relay(wants_usage: bool = False) -> tuple[StreamRelay, Client, list[str]]:
    client, firsts = Client(), []
    return (
        StreamRelay(client, wants_usage=wants_usage, on_first_token=lambda: firsts.append("t")),
        client,
        firsts,
    )


async def test_complete_events_go_out_at_once_and_the_tail_waits_for_its_end():
    stream, client, _ = relay()
    await stream.feed(ROLE + TOKEN[:10])
    assert client.sent == [ROLE]
    await stream.feed(TOKEN[10:] + DONE)
    assert client.body == ROLE + TOKEN + DONE
    assert stream.done


@pytest.mark.parametrize("event", [TOKEN, THINK, TOOL, TEXT])
async def test_the_first_token_is_the_first_content_or_reasoning(event):
    stream, _, firsts = relay()
    await stream.feed(ROLE)
    assert firsts == []
    await stream.feed(event + event)
    assert firsts == ["t"]


async def test_the_usage_chunk_is_dropped_but_counted_unless_asked():
    stream, client, _ = relay()
    await stream.feed(TOKEN + USAGE + DONE)
    assert client.body == TOKEN + DONE
    assert stream.usage is not None
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (5, 2)
    asked, client, _ = relay(wants_usage=True)
    await asked.feed(TOKEN + USAGE + DONE)
    assert client.body == TOKEN + USAGE + DONE


async def test_usage_riding_on_a_content_chunk_is_kept():
    stream, client, _ = relay()
    await stream.feed(INLINE + DONE)
    assert client.body == INLINE + DONE
    assert stream.usage is not None


async def test_crlf_framing_comments_and_odd_events_pass_untouched():
    stream, client, firsts = relay()
    crlf = TOKEN.replace(b"\n\n", b"\r\n\r\n")
    odd = b': keep-alive\n\ndata: {"error": {"message": "x"}}\n\ndata: not json\n\n'
    await stream.feed(odd + crlf + USAGE.replace(b"\n\n", b"\r\n\r\n"))
    assert client.body == odd + crlf
    assert firsts == ["t"]


async def test_a_done_without_its_blank_line_still_ends_the_stream():
    stream, client, _ = relay()
    await stream.feed(TOKEN + b"data: [DONE]")
    await stream.finish()
    assert client.body == TOKEN + DONE
    assert stream.done


async def test_an_unfinished_event_is_dropped_and_the_failure_ends_the_stream():
    stream, client, _ = relay()
    await stream.feed(TOKEN + TOKEN[:12])
    await stream.finish()
    assert not stream.done
    await stream.fail(UpstreamError("gone"))
    *_, error, done, end = client.body.split(b"\n\n")
    assert client.body.startswith(TOKEN)
    assert json.loads(error.removeprefix(b"data: "))["error"]["code"] == "upstream_error"
    assert (done, end) == (b"data: [DONE]", b"")
    assert stream.done
