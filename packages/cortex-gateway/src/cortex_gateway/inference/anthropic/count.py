"""``POST /v1/messages/count_tokens``: exact where the model is loaded, else an estimate.

The request is translated as for ``/v1/messages`` and counted by a neuron's ``/tokenize``
(its chat template and tools applied) on a healthy node that has the model loaded. With none,
or when every such neuron is unreachable or has just unloaded it, the answer is an estimate (a
token per four bytes of the translated JSON), labelled ``"estimated": true`` and
``cortex-token-count: estimate``.
Counting never loads a model.
"""

from starlette.requests import Request
from starlette.responses import Response

from cortex_core import decode, encode
from cortex_core.errors import ModelNotLoadedError, RequestTooLargeError, UpstreamError
from cortex_core.wire.control import TokenizeRequest, TokenizeResponse
from cortex_gateway.context import context
from cortex_gateway.inference.anthropic.translate import chat_messages, chat_tools
from cortex_gateway.inference.anthropic.types import CountTokensRequest, Tokens

__all__ = ["TOKENIZE_TIMEOUT_S", "count_tokens", "estimate"]

TOKENIZE_TIMEOUT_S = 30.0
"""A neuron that has not counted a prompt in this long is skipped for the estimate."""

_BYTES_PER_TOKEN = 4


def estimate(tokenize: TokenizeRequest) -> int:
    """About how many tokens the request's messages and tools make."""
    size = len(encode(tokenize.messages)) + len(encode(tokenize.tools))
    return max(1, size // _BYTES_PER_TOKEN)


async def _body(request: Request, limit: int) -> bytes:
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(
                f"The body is over {limit} bytes, the most this gateway takes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def count_tokens(request: Request) -> Response:
    """Count the input tokens of a Messages request."""
    ctx = context(request.scope)
    body = decode(await _body(request, ctx.config.gateway.max_body_bytes), CountTokensRequest)
    messages = chat_messages(body)
    model_id = ctx.catalogue.resolve(body.model)
    tokenize = TokenizeRequest(model=model_id, messages=messages, tools=chat_tools(body.tools))
    for node in ctx.nodes:
        if not node.healthy or node.status(model_id) != "loaded":
            continue
        try:
            counted = await ctx.upstream.post(
                node.peer, "/tokenize", tokenize, TokenizeResponse, limit_s=TOKENIZE_TIMEOUT_S
            )
        except (UpstreamError, ModelNotLoadedError):
            continue  # unreachable, or unloaded since the last poll: the next, else estimate
        return _answer(Tokens(input_tokens=counted.count), "exact")
    return _answer(Tokens(input_tokens=estimate(tokenize), estimated=True), "estimate")


def _answer(tokens: Tokens, how: str) -> Response:
    response = Response(encode(tokens), media_type="application/json")
    response.headers["cortex-token-count"] = how
    return response
