"""What the neuron adds to ``/v1/responses`` around the engine: refusals and the stream's end.

- ``previous_response_id`` is refused with a 400 naming it: vLLM keeps a response only in the
  process of the engine that made it (and only with ``VLLM_ENABLE_RESPONSES_API_STORE``, which
  never frees them), so a follow-up could only work on that node, in that engine's lifetime.
  ``background: true`` (which needs the store) is refused the same way.
  ``store: true`` is accepted and not honoured, as vLLM does: the answer says ``"store": false``.
- A Responses stream that fails after it started ends with a Responses ``error`` event
  (``type``, ``code``, ``message``, ``param``, ``sequence_number``), not chat's envelope and
  ``data: [DONE]``: the ``openai`` SDK yields it to the client as a ``ResponseErrorEvent``.
"""

from collections.abc import AsyncIterator

import msgspec

from cortex_core import codec
from cortex_core.asgi import responses_error_event
from cortex_core.errors import CortexError, InvalidRequestError

__all__ = ["Sequenced", "check"]


class _Stateful(msgspec.Struct):
    previous_response_id: str | None = None
    background: bool | None = None


def check(body: bytes) -> None:
    """Refuse what this neuron cannot serve (see the module's docstring).

    Raises:
        InvalidRequestError: the body names ``previous_response_id`` or asks for ``background``.
    """
    stateful = codec.decode(body, _Stateful)
    if stateful.previous_response_id is not None:
        raise InvalidRequestError(
            "previous_response_id is not supported: responses are not stored; send the "
            "conversation in `input` instead",
            param="previous_response_id",
        )
    if stateful.background:
        raise InvalidRequestError(
            "background is not supported: responses are not stored", param="background"
        )


class Sequenced:
    """A Responses stream, counted, so that its error event follows the last event's number."""

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        self._events = events
        self._sent = 0

    def __aiter__(self) -> "Sequenced":
        return self

    async def __anext__(self) -> bytes:
        event = await anext(self._events)
        self._sent += 1
        return event

    async def aclose(self) -> None:
        """Close the engine's stream (aborting its request)."""
        close = getattr(self._events, "aclose", None)
        if close is not None:
            await close()

    def error_event(self, exc: CortexError) -> bytes:
        """The event that ends the stream with ``exc``."""
        return responses_error_event(exc, self._sent)
