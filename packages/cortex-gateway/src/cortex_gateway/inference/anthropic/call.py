"""The Anthropic dialect's :class:`~cortex_gateway.inference.dialect.Call` for ``/v1/messages``.

The body is decoded and translated when the call is made, so a bad one is refused (400 naming
the field) before any routing; the neuron is sent an OpenAI chat request. Its error answers
come back in Anthropic's envelope (:mod:`.errors`), its whole answer as a message, its stream
through :class:`~.stream.AnthropicRelay`.
"""

from collections.abc import Callable

from starlette.types import Send

from cortex_core import decode, encode
from cortex_core.wire.inference import Usage
from cortex_gateway.inference.anthropic.errors import error_envelope, for_anthropic
from cortex_gateway.inference.anthropic.stream import AnthropicRelay
from cortex_gateway.inference.anthropic.translate import chat_request, message, thinking_requested
from cortex_gateway.inference.anthropic.types import MessagesRequest
from cortex_gateway.inference.dialect import Answer
from cortex_gateway.upstream import Refusal

__all__ = ["AnthropicCall"]


def _json(status: int, body: bytes, extra: dict[str, str] | None = None) -> Answer:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    return Answer(status, headers, body)


class AnthropicCall:
    """One ``POST /v1/messages`` on its way through.

    Raises:
        InvalidRequestError: the body is not a valid Messages request (``param`` names where).
    """

    path = "/v1/chat/completions"

    def __init__(self, body: bytes) -> None:
        self._request = decode(body, MessagesRequest)
        self._chat = chat_request(self._request)
        self.model = self._request.model
        self.streaming = bool(self._request.stream)

    def upstream_body(self, model_id: str) -> bytes:
        """The OpenAI chat body for the neuron."""
        return encode({"model": model_id, **self._chat})

    def refusal(self, refusal: Refusal) -> Answer:
        """The neuron's error in Anthropic's envelope (a 507 as a 529, ``Retry-After`` kept)."""
        error = for_anthropic(refusal.error)
        status = error.status_code if error is not refusal.error else refusal.status
        return _json(status, error_envelope(error, status), error.headers)

    def answer(self, status: int, payload: bytes, content_type: str) -> tuple[Answer, Usage | None]:
        """The neuron's chat answer as an Anthropic message.

        Raises:
            UpstreamError: the answer is not a chat completion.
        """
        reply = message(payload, self.model, self._request)
        counts = Usage(
            prompt_tokens=reply.usage.input_tokens,
            completion_tokens=reply.usage.output_tokens,
            total_tokens=reply.usage.input_tokens + reply.usage.output_tokens,
        )
        return _json(status, encode(reply)), counts

    def relay(self, send: Send, on_first_token: Callable[[], None]) -> AnthropicRelay:
        """The relay turning the neuron's chunks into Anthropic events."""
        return AnthropicRelay(
            send,
            model=self.model,
            thinking=thinking_requested(self._request),
            stops=self._request.stop_sequences,
            on_first_token=on_first_token,
        )
