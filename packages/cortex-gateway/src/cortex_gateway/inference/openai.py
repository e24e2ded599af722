"""The OpenAI dialect: ``/v1/chat/completions`` and ``/v1/completions`` as the neuron speaks them.

Neurons speak OpenAI, so this dialect translates nothing. Its request view decodes only the
routing fields; the body is forwarded as bytes with DESIGN §4's edits only (:func:`edit_body`:
an alias replaced by its id and, for streams, ``stream_options.include_usage`` set). A neuron's
error answer passes through unchanged; a whole answer too, read only for its ``usage``.

:class:`StreamRelay` relays the SSE stream event by event as it arrives, never re-encoded: bytes
go out as soon as an event is complete, and events are looked into only until the first token
(for the time to first token) and where ``"usage"`` appears (for token counts, and to drop the
usage-only chunk the gateway asked for on the client's behalf). After a failure,
:meth:`StreamRelay.fail` ends the stream with an error event and ``data: [DONE]`` (DESIGN §6).
"""

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from starlette.types import Send

from cortex_core import decode, encode
from cortex_core.asgi import DONE, error_event
from cortex_core.errors import CortexError, InvalidRequestError, UpstreamError
from cortex_core.wire.inference import InferenceRequest, Usage, UsageReport
from cortex_gateway.inference.dialect import Answer
from cortex_gateway.upstream import Refusal

__all__ = [
    "OpenAICall",
    "StreamRelay",
    "edit_body",
    "json_answer",
    "passed_refusal",
    "passed_usage",
    "with_model",
]

_Report = TypeVar("_Report")

_EVENT = re.compile(rb"(.*?)\r?\n\r?\n", re.DOTALL)


class _StreamOptions(msgspec.Struct):
    stream_options: dict[str, Any] | None = None


@functools.lru_cache(maxsize=256)
def _model_member(name: str) -> re.Pattern[bytes]:
    return re.compile(rb'"model"\s*:\s*"' + re.escape(name.encode()) + rb'"')


def _add_member(body: bytes, member: bytes) -> bytes:
    # The body decoded as an object, so its last non-blank byte is the closing brace. JSON
    # parsers keep the last of two equal keys, so an added member overrides an earlier one.
    end = body.rstrip().rfind(b"}")
    return body[:end] + b"," + member + body[end:]


def with_model(body: bytes, named: str, model_id: str) -> bytes:
    """``body`` naming ``model_id`` where the client named ``named`` (an alias)."""
    if named == model_id:
        return body
    member = b'"model":' + encode(model_id)
    found = list(_model_member(named).finditer(body))
    if len(found) == 1:  # only the top-level key can be it: splice in place
        return body[: found[0].start()] + member + body[found[0].end() :]
    return _add_member(body, member)


def edit_body(body: bytes, request: InferenceRequest, model_id: str) -> bytes:
    """``body`` with DESIGN §4's edits: the model's id for an alias, usage asked of streams."""
    body = with_model(body, request.model, model_id)
    if request.streaming and not request.wants_usage:
        options = decode(body, _StreamOptions).stream_options or {}
        body = _add_member(body, b'"stream_options":' + encode({**options, "include_usage": True}))
    return body


def json_answer(status: int, content_type: str, payload: bytes) -> Answer:
    """A whole JSON answer, as the neuron sent it."""
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(payload))]
    return Answer(status, headers, payload)


def passed_refusal(refusal: Refusal) -> Answer:
    """A neuron's error answer, passed through unchanged (its ``Retry-After`` too)."""
    answer = json_answer(refusal.status, refusal.content_type, refusal.payload)
    answer.headers += [(k.lower().encode(), v.encode()) for k, v in refusal.error.headers.items()]
    return answer


class OpenAICall:
    """One OpenAI inference request on its way through: ``path`` is also the neuron's route.

    Raises:
        InvalidRequestError: the body is not a JSON object with a string ``model``.
    """

    def __init__(self, path: str, body: bytes) -> None:
        self.path = path
        self._body = body
        self._request = decode(body, InferenceRequest)
        self.model = self._request.model
        self.streaming = self._request.streaming

    def upstream_body(self, model_id: str) -> bytes:
        """The body for the neuron: the client's, with the allowed edits."""
        return edit_body(self._body, self._request, model_id)

    def refusal(self, refusal: Refusal) -> Answer:
        """The neuron's error answer, passed through unchanged (its ``Retry-After`` too)."""
        return passed_refusal(refusal)

    def answer(self, status: int, payload: bytes, content_type: str) -> tuple[Answer, Usage | None]:
        """The neuron's whole answer, unchanged, and the ``usage`` it reports.

        Raises:
            UpstreamError: see :func:`passed_usage`.
        """
        usage = passed_usage(payload, UsageReport).usage
        return json_answer(status, content_type, payload), usage

    def relay(self, send: Send, on_first_token: Callable[[], None]) -> "StreamRelay":
        """The relay of the neuron's stream to ``send``."""
        return StreamRelay(
            send, wants_usage=self._request.wants_usage, on_first_token=on_first_token
        )


def passed_usage(payload: bytes, report: type[_Report]) -> _Report:
    """``report`` (the usage part) of a whole answer that passes through unchanged.

    Raises:
        UpstreamError: the answer is not the neuron's JSON (a broken neuron or a proxy's page):
            passed on, it would be a 200 the client cannot read.
    """
    try:
        return decode(payload, report)
    except InvalidRequestError as exc:
        raise UpstreamError(f"the neuron's answer is not its JSON: {exc}") from exc


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
        self.end = "data: [DONE]"

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
            await self._forward(DONE)

    async def fail(self, exc: CortexError) -> None:
        """End the stream with ``exc`` as an error event, then ``data: [DONE]``."""
        self._pending = b""
        await self._forward(error_event(exc))

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
