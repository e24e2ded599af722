"""What a dialect gives the neutral exchange: one :class:`Call` per request.

A dialect (OpenAI chat and completions, Anthropic Messages, OpenAI Responses) turns a client's
body into a :class:`Call`: the model it names, whether it streams, the neuron route and body,
and how the neuron's answers (an error, a whole answer, a stream) go back to the client in the
client's own terms. Which error envelope a path speaks is
:func:`cortex_gateway.errors.error_body`'s.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from starlette.types import Send

from cortex_core.errors import CortexError
from cortex_core.wire.inference import Usage
from cortex_gateway.upstream import Refusal

__all__ = ["Answer", "Call", "Relay"]


@dataclass
class Answer:
    """A whole answer for the client: status, headers and body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class Relay(Protocol):
    """Turns a neuron's SSE stream into the client's, as it arrives (the response has started)."""

    usage: Usage | None
    """The token counts the stream reported, once it has."""
    end: str
    """What the stream's proper end is, for the error when it is cut (``data: [DONE]``)."""

    @property
    def done(self) -> bool:
        """Whether the stream reached its proper end (else it was cut short)."""
        ...  # pragma: no cover

    async def feed(self, data: bytes) -> None:
        """Take bytes from the neuron; send the client what they complete."""
        ...  # pragma: no cover

    async def finish(self) -> None:
        """The neuron's body ended."""
        ...  # pragma: no cover

    async def fail(self, exc: CortexError) -> None:
        """End the stream with ``exc`` (DESIGN §6: an error event, never a silent truncation)."""
        ...  # pragma: no cover


class Call(Protocol):
    """One inference request in its client's dialect."""

    path: str
    """The neuron's route for it."""
    model: str
    """The model name the client asked for (maybe an alias)."""
    streaming: bool

    def upstream_body(self, model_id: str) -> bytes:
        """The body to send the neuron for ``model_id``."""
        ...  # pragma: no cover

    def refusal(self, refusal: Refusal) -> Answer:
        """The client's answer to the neuron's error answer."""
        ...  # pragma: no cover

    def answer(self, status: int, payload: bytes, content_type: str) -> tuple[Answer, Usage | None]:
        """The client's answer to the neuron's whole answer, and the usage it reports."""
        ...  # pragma: no cover

    def relay(self, send: Send, on_first_token: Callable[[], None]) -> Relay:
        """The relay of the neuron's stream; ``on_first_token`` at the first content token."""
        ...  # pragma: no cover
