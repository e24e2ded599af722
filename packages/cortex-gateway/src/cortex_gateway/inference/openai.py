"""Relays an OpenAI SSE stream to the client as it arrives, event by event, never re-encoded.

Bytes go out as soon as an event is complete; only the tail of an event still arriving is
held. Events are looked into only where needed: until the first token (for the time to first
token) and where ``"usage"`` appears (for token counts, and to drop the usage-only chunk the
gateway asked for on the client's behalf). After a failure, :meth:`StreamRelay.fail` ends the
stream with an error event and ``data: [DONE]`` (DESIGN §6).
"""

import re
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.types import Send

from cortex_core import encode, to_envelope
from cortex_core.errors import CortexError
from cortex_core.wire.inference import Usage

__all__ = ["StreamRelay"]

_EVENT = re.compile(rb"(.*?)\r?\n\r?\n", re.DOTALL)
_DONE = b"data: [DONE]\n\n"


class _Delta(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[Any] | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    text: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] = msgspec.field(default_factory=list)
    usage: Usage | None = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


def _has_token(chunk: _Chunk) -> bool:
    for choice in chunk.choices:
        if choice.text:
            return True
        delta = choice.delta
        if delta is not None and (
            delta.content or delta.reasoning_content or delta.reasoning or delta.tool_calls
        ):
            return True
    return False


def _boundary(data: bytes) -> int:
    """The index just past the last complete event in ``data`` (0: none is complete)."""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def _payload(event: bytes) -> bytes | None:
    lines = [line for line in event.splitlines() if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[5:].removeprefix(b" ") for line in lines)


class StreamRelay:
    """Forwards one SSE stream to ``send``.

    Args:
        send: The client's ASGI send; the response has started.
        wants_usage: The client asked for the usage-only chunk itself.
        on_first_token: Called once, at the first chunk carrying content or reasoning.
    """

    def __init__(
        self, send: Send, *, wants_usage: bool, on_first_token: Callable[[], None]
    ) -> None:
        self._send = send
        self._wants_usage = wants_usage
        self._on_first_token: Callable[[], None] | None = on_first_token
        self._pending = b""
        self.usage: Usage | None = None
        self.done = False
        """Whether the last event forwarded was ``data: [DONE]``."""

    async def feed(self, data: bytes) -> None:
        """Take bytes from the neuron; forward every event they complete."""
        if self._pending:
            data = self._pending + data
        cut = _boundary(data)
        if cut == 0:
            self._pending = data
            return
        block, self._pending = data[:cut], data[cut:]
        if self._on_first_token is not None or b'"usage"' in block:
            block = self._inspect(block)
        await self._forward(block)

    async def finish(self) -> None:
        """The neuron's body ended; a ``[DONE]`` without its blank line still counts.

        Any other unfinished event is dropped: half an event would break the client's parser
        before it could read the error that follows.
        """
        tail, self._pending = self._pending, b""
        if tail.strip() == b"data: [DONE]":
            await self._forward(_DONE)

    async def fail(self, exc: CortexError) -> None:
        """End the stream with ``exc`` as an error event, then ``data: [DONE]``."""
        self._pending = b""
        await self._forward(b"data: " + encode(to_envelope(exc)) + b"\n\n" + _DONE)

    async def _forward(self, block: bytes) -> None:
        if block:
            self.done = block.rstrip().endswith(b"data: [DONE]")
            await self._send({"type": "http.response.body", "body": block, "more_body": True})

    def _inspect(self, block: bytes) -> bytes:
        kept: list[bytes] = []
        dropped = False
        for match in _EVENT.finditer(block):
            payload = _payload(match[1])
            if payload is None or payload == b"[DONE]" or self._keep(payload):
                kept.append(match[0])
            else:
                dropped = True
        return b"".join(kept) if dropped else block

    def _keep(self, payload: bytes) -> bool:
        try:
            chunk = _decode_chunk(payload)
        except msgspec.DecodeError:
            return True  # not a chunk (an error event, say): the client's to read
        if self._on_first_token is not None and _has_token(chunk):
            self._on_first_token()
            self._on_first_token = None
        if chunk.usage is None:
            return True
        self.usage = chunk.usage
        return bool(chunk.choices) or self._wants_usage
