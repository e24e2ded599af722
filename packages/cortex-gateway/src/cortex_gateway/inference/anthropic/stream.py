"""The Anthropic stream: a neuron's OpenAI chat chunks as Anthropic's exact event sequence.

``message_start`` exactly once (with the whole usage object: Claude Code rejects a stream
without it), then per content block ``content_block_start``, its deltas (``thinking_delta``,
``text_delta``, ``input_json_delta``) and ``content_block_stop``, with indices counting up from 0;
a new block opens whenever the kind changes or a new tool call begins (arguments split across
chunks stay in their block). ``message_delta`` (stop reason, usage) and ``message_stop`` follow
``data: [DONE]``. Each SSE comment of the neuron (its ``: keep-alive`` while it waits on a long
prefill) becomes a ``ping``. A failure, in the neuron's stream or of the stream itself, is one
``error`` event and the end (DESIGN §6).
"""

import uuid
from collections.abc import Callable

import msgspec
from starlette.types import Send

from cortex_core.errors import CortexError, UpstreamError, error_from_envelope
from cortex_core.wire.inference import Usage as OpenAIUsageCounts
from cortex_gateway.inference.anthropic.errors import error_envelope
from cortex_gateway.inference.anthropic.translate import (
    Completion,
    OpenAIUsage,
    stop_reason,
    usage,
)
from cortex_gateway.inference.anthropic.types import (
    ContentBlockDelta,
    ContentBlockStart,
    ContentBlockStop,
    Event,
    InputJsonDelta,
    MessageDelta,
    MessageDeltaBody,
    MessageResponse,
    MessageStart,
    MessageStop,
    Ping,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
)

__all__ = ["AnthropicRelay"]

_encoder = msgspec.json.Encoder()
_decode = msgspec.json.Decoder(Completion).decode


def _sse(event: Event) -> bytes:
    name = type(event).__struct_config__.tag
    assert isinstance(name, str)
    return b"event: " + name.encode() + b"\ndata: " + _encoder.encode(event) + b"\n\n"


class AnthropicRelay:
    """Turns one neuron stream into Anthropic events sent to ``send``.

    Args:
        send: The client's ASGI send; the response has started.
        model: The model name to report (the client's).
        thinking: Whether reasoning goes out as thinking blocks (else it is dropped).
        stops: The request's ``stop_sequences``.
        on_first_token: Called once, at the first content, reasoning or tool-call token.
    """

    def __init__(
        self,
        send: Send,
        *,
        model: str,
        thinking: bool,
        stops: list[str] | None,
        on_first_token: Callable[[], None],
    ) -> None:
        self._send = send
        self._model = model
        self._thinking = thinking
        self._stops = stops
        self._on_first_token: Callable[[], None] | None = on_first_token
        self._pending = b""
        self._started = False
        self._index = -1
        self._open: str | None = None
        """The kind of the open block: "thinking", "text" or "tool:<openai index>"."""
        self._finish: str | None = None
        self._matched: str | int | None = None
        self._report: OpenAIUsage | None = None
        self.usage: OpenAIUsageCounts | None = None
        self.done = False
        self.end = "data: [DONE]"  # the neuron's chat stream's, which this relay reads

    async def feed(self, data: bytes) -> None:
        """Take bytes from the neuron; send the events the complete ones make."""
        data = self._pending + data
        out: list[bytes] = []
        while not self.done:
            lf, crlf = data.find(b"\n\n"), data.find(b"\r\n\r\n")
            ends = [(i, n) for i, n in ((lf, 2), (crlf, 4)) if i >= 0]
            if not ends:
                break
            cut, width = min(ends)
            event, data = data[:cut], data[cut + width :]
            self._event(event, out)
        self._pending = b"" if self.done else data
        await self._emit(out)

    async def finish(self) -> None:
        """The neuron's body ended; a last ``[DONE]`` without its blank line still counts."""
        tail, self._pending = self._pending, b""
        if not self.done and tail.strip() == b"data: [DONE]":
            await self.feed(b"data: [DONE]\n\n")

    async def fail(self, exc: CortexError) -> None:
        """End the stream with an ``error`` event."""
        self._pending = b""
        out: list[bytes] = []
        self._failed(exc, out)
        await self._emit(out)

    async def _emit(self, out: list[bytes]) -> None:
        if out:
            await self._send(
                {"type": "http.response.body", "body": b"".join(out), "more_body": True}
            )

    def _event(self, event: bytes, out: list[bytes]) -> None:
        lines = event.splitlines()
        data = [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]
        if not data:
            if any(line.startswith(b":") for line in lines):
                self._start(out, None)
                out.append(_sse(Ping()))
            return
        payload = b"\n".join(data)
        if payload == b"[DONE]":
            self._end(out)
            return
        try:
            chunk = _decode(payload)
        except msgspec.DecodeError:
            self._failed(UpstreamError("the neuron sent an event that is not a chunk"), out)
            return
        if chunk.error is not None:
            self._failed(error_from_envelope(502, chunk.error), out)
            return
        self._chunk(chunk, out)

    def _failed(self, error: CortexError, out: list[bytes]) -> None:
        """The neuron's stream failed (its error event, or garbage): the error, and the end."""
        self._start(out, None)
        out.append(b"event: error\ndata: " + error_envelope(error) + b"\n\n")
        self.done = True

    def _start(self, out: list[bytes], chunk: Completion | None) -> None:
        """``message_start``, once: with the prompt's tokens when the first chunk has them."""
        if self._started:
            return
        self._started = True
        ident = chunk.id if chunk is not None and chunk.id else uuid.uuid4().hex
        counts = usage(chunk.usage if chunk is not None else None)
        message = MessageResponse(id=f"msg_{ident}", model=self._model, content=[], usage=counts)
        out.append(_sse(MessageStart(message=message)))

    def _block(
        self, kind: str, out: list[bytes], block: TextBlock | ToolUseBlock | ThinkingBlock
    ) -> None:
        self._close(out)
        self._index += 1
        self._open = kind
        out.append(_sse(ContentBlockStart(index=self._index, content_block=block)))

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(_sse(ContentBlockStop(index=self._index)))
            self._open = None

    def _delta(self, out: list[bytes], delta: TextDelta | InputJsonDelta | ThinkingDelta) -> None:
        out.append(_sse(ContentBlockDelta(index=self._index, delta=delta)))

    def _chunk(self, chunk: Completion, out: list[bytes]) -> None:
        self._start(out, chunk)
        if chunk.usage is not None:
            self._report = chunk.usage
        for choice in chunk.choices:
            if choice.finish_reason is not None:
                self._finish, self._matched = choice.finish_reason, choice.stop_reason
            said = choice.delta
            if said is None:
                continue
            reasoning = said.reasoning_content or said.reasoning
            if (reasoning or said.content or said.tool_calls) and self._on_first_token:
                self._on_first_token()
                self._on_first_token = None
            if reasoning and self._thinking:
                if self._open != "thinking":
                    self._block("thinking", out, ThinkingBlock(thinking=""))
                self._delta(out, ThinkingDelta(thinking=reasoning))
            if said.content:
                if self._open != "text":
                    self._block("text", out, TextBlock(text=""))
                self._delta(out, TextDelta(text=said.content))
            for call in said.tool_calls or ():
                kind = f"tool:{call.index}"
                function = call.function
                if self._open != kind:
                    ident = call.id or f"toolu_{chunk.id}_{call.index}"
                    name = (function.name if function else None) or ""
                    self._block(kind, out, ToolUseBlock(id=ident, name=name, input={}))
                if function is not None and function.arguments:
                    self._delta(out, InputJsonDelta(partial_json=function.arguments))

    def _end(self, out: list[bytes]) -> None:
        self._start(out, None)
        self._close(out)
        reason, sequence = stop_reason(self._finish, self._matched, self._stops)
        report = self._report
        if report is not None:
            self.usage = OpenAIUsageCounts(
                prompt_tokens=report.prompt_tokens,
                completion_tokens=report.completion_tokens,
                total_tokens=report.total_tokens,
            )
        body = MessageDeltaBody(stop_reason=reason, stop_sequence=sequence)
        out.append(_sse(MessageDelta(delta=body, usage=usage(report))))
        out.append(_sse(MessageStop()))
        self.done = True
