"""The OpenAI Responses dialect: ``/v1/responses``, passed through to the neuron like chat.

Neurons speak it (vLLM's own Responses layer), so nothing is translated. The request view
decodes only what routing needs (``model``, ``stream``) and what no neuron serves: a body
naming ``previous_response_id`` or asking for ``background`` is refused here with the neuron's
400, before anything is routed or loaded (responses are not stored: DESIGN §3). The one edit
is the alias's (the body's ``model`` replaced by its id). Usage is ``input_tokens`` and
``output_tokens``, counted as the prompt's and the completion's.

:class:`ResponsesRelay` forwards the stream event by event, unchanged, and reads each event's
``type`` and ``sequence_number``: its first output ``*.delta`` is the first token (for the time
to first token), ``response.completed`` (or ``response.failed`` / ``response.incomplete``)
its end and its usage, and an ``error`` event the neuron's own end of a failed stream. There
is no ``data: [DONE]``. A stream cut before its end gets an ``error`` event numbered after the
last one forwarded, and closes.
"""

from collections.abc import Callable

import msgspec
from starlette.types import Send

from cortex_core import decode
from cortex_core.asgi import responses_error_event
from cortex_core.errors import CortexError, InvalidRequestError
from cortex_core.wire.inference import Usage
from cortex_gateway.inference.dialect import Answer
from cortex_gateway.inference.openai import (
    json_answer,
    passed_refusal,
    passed_usage,
    with_model,
)
from cortex_gateway.upstream import Refusal

__all__ = ["ResponsesCall", "ResponsesRelay"]

PATH = "/v1/responses"
_ENDS = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})


class _Request(msgspec.Struct, kw_only=True, frozen=True):
    model: str
    stream: bool | None = False
    previous_response_id: str | None = None
    background: bool | None = None


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    def counts(self) -> Usage:
        return Usage(
            prompt_tokens=self.input_tokens,
            completion_tokens=self.output_tokens,
            total_tokens=self.total_tokens,
        )


class _Response(msgspec.Struct):
    usage: _Usage | None = None


class _Event(msgspec.Struct):
    type: str = ""
    sequence_number: int | None = None
    response: _Response | None = None


_decode_event = msgspec.json.Decoder(_Event).decode


class ResponsesCall:
    """One ``/v1/responses`` request on its way through.

    Raises:
        InvalidRequestError: the body is not a JSON object with a string ``model``, or it
            names what no neuron serves (``previous_response_id``, ``background``).
    """

    path = PATH

    def __init__(self, body: bytes) -> None:
        self._body = body
        request = decode(body, _Request)
        if request.previous_response_id is not None:
            raise InvalidRequestError(
                "previous_response_id is not supported: responses are not stored; send the "
                "conversation in `input` instead",
                param="previous_response_id",
            )
        if request.background:
            raise InvalidRequestError(
                "background is not supported: responses are not stored", param="background"
            )
        self.model = request.model
        self.streaming = bool(request.stream)

    def upstream_body(self, model_id: str) -> bytes:
        """The client's body, naming ``model_id``."""
        return with_model(self._body, self.model, model_id)

    def refusal(self, refusal: Refusal) -> Answer:
        """The neuron's error answer, unchanged (its ``Retry-After`` too)."""
        return passed_refusal(refusal)

    def answer(self, status: int, payload: bytes, content_type: str) -> tuple[Answer, Usage | None]:
        """The neuron's response, unchanged, and its usage.

        Raises:
            UpstreamError: see :func:`~cortex_gateway.inference.openai.passed_usage`.
        """
        usage = passed_usage(payload, _Response).usage
        counts = usage.counts() if usage is not None else None
        return json_answer(status, content_type, payload), counts

    def relay(self, send: Send, on_first_token: Callable[[], None]) -> "ResponsesRelay":
        """The relay of the neuron's event stream to ``send``."""
        return ResponsesRelay(send, on_first_token=on_first_token)


def _boundary(data: bytes) -> int:
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def _data(event: bytes) -> bytes | None:
    lines = [line for line in event.splitlines() if line.startswith(b"data:")]
    if not lines:
        return None  # a comment (the neuron's keep-alive)
    return b"\n".join(line[5:].removeprefix(b" ") for line in lines)


class ResponsesRelay:
    """Forwards one Responses event stream to ``send`` (the response has started).

    Args:
        send: The client's ASGI send.
        on_first_token: Called once, at the first output delta.
    """

    end = "response.completed"

    def __init__(self, send: Send, *, on_first_token: Callable[[], None]) -> None:
        self._send = send
        self._on_first_token: Callable[[], None] | None = on_first_token
        self._pending = b""
        self._next = 0
        self.usage: Usage | None = None
        self.done = False
        """Whether the stream reached its end (or the neuron's error event)."""

    async def feed(self, data: bytes) -> None:
        """Take bytes from the neuron; forward every event they complete."""
        if self._pending:
            data = self._pending + data
        cut = _boundary(data)
        block, self._pending = data[:cut], data[cut:]
        if not block:
            return
        for event in block.replace(b"\r\n", b"\n").split(b"\n\n"):
            self._read(event)
        await self._send({"type": "http.response.body", "body": block, "more_body": True})

    async def finish(self) -> None:
        """The neuron's body ended; an unfinished event is dropped (it would break parsers)."""
        self._pending = b""

    async def fail(self, exc: CortexError) -> None:
        """End the stream with ``exc`` as an ``error`` event."""
        self._pending = b""
        event = responses_error_event(exc, self._next)
        await self._send({"type": "http.response.body", "body": event, "more_body": True})

    def _read(self, event: bytes) -> None:
        payload = _data(event)
        if payload is None:
            return
        try:
            parsed = _decode_event(payload)
        except msgspec.DecodeError:
            return  # not an event of ours: the client's to read
        if parsed.sequence_number is not None:
            self._next = parsed.sequence_number + 1
        kind = parsed.type
        if self._on_first_token is not None and kind.endswith(".delta"):
            self._on_first_token()
            self._on_first_token = None
        if kind in _ENDS:
            self.done = True
            if parsed.response is not None and parsed.response.usage is not None:
                self.usage = parsed.response.usage.counts()
