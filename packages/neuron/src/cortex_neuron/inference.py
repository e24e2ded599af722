"""OpenAI inference on the loaded models: chat, completions, Responses, tokenize, the model list.

The body goes to the engine as the client sent it; the neuron reads only ``model`` to find the
engine. Each request is admitted (or refused with 429) before it reaches the engine, and holds
its admission until its answer has ended.
"""

import functools
import logging
import time

from starlette.requests import Request
from starlette.responses import Response

from cortex_core import codec
from cortex_core.errors import (
    CortexError,
    InvalidRequestError,
    RateLimitError,
    ShuttingDownError,
)
from cortex_core.ids import check_model_id
from cortex_core.logging import request_id
from cortex_core.wire.control import TokenizeRequest, TokenizeResponse
from cortex_core.wire.inference import InferenceRequest
from cortex_core.wire.models import ModelCard, ModelList
from cortex_neuron import responses as responses_api
from cortex_neuron.context import AppContext, context
from cortex_neuron.control import json_response
from cortex_neuron.streaming import CLIENT_GONE, ClientGoneError, EventStream, until_done

__all__ = ["chat_completions", "completions", "list_models", "responses", "tokenize"]

logger = logging.getLogger(__name__)


async def chat_completions(request: Request) -> Response | EventStream:
    """``POST /v1/chat/completions``."""
    return await _infer(request, "chat")


async def completions(request: Request) -> Response | EventStream:
    """``POST /v1/completions``."""
    return await _infer(request, "completion")


async def responses(request: Request) -> Response | EventStream:
    """``POST /v1/responses`` (``previous_response_id`` is refused: see :mod:`.responses`)."""
    return await _infer(request, "responses")


async def tokenize(request: Request) -> Response:
    """``POST /tokenize``: the token count of messages (with the chat template) or a prompt."""
    ctx = context(request)
    body = codec.decode(await request.body(), TokenizeRequest)
    if body.messages is None and body.prompt is None:
        raise InvalidRequestError("`messages` or `prompt` is required", param="messages")
    state = ctx.lifecycle.serving(check_model_id(body.model))
    assert state.engine is not None
    count = await state.engine.tokenize(body)
    return json_response(TokenizeResponse(count=count, max_model_len=state.engine.max_model_len))


async def list_models(request: Request) -> Response:
    """``GET /v1/models``: the models loaded here, as an OpenAI list."""
    loaded = [m for m in context(request).lifecycle.models() if m.status == "loaded"]
    cards = [
        ModelCard(
            id=m.id, created=int(m.loaded_at or 0), owned_by="neuron", max_model_len=m.max_model_len
        )
        for m in loaded
    ]
    return json_response(ModelList(data=cards))


async def _infer(request: Request, route: str) -> Response | EventStream:
    ctx = context(request)
    body = await request.body()
    model = check_model_id(codec.decode(body, InferenceRequest).model)
    if route == "responses":
        responses_api.check(body)
    if ctx.lifecycle.draining:
        raise ShuttingDownError("the neuron is shutting down", retry_after=5)
    state = ctx.lifecycle.serving(model)
    assert state.engine is not None
    assert state.gate is not None
    try:
        ticket = state.gate.admit()
    except CortexError as exc:
        reason = "queue_full" if isinstance(exc, RateLimitError) else exc.code
        ctx.metrics.rejections.labels(model, reason).inc()
        raise
    engine = state.engine
    call = {"chat": engine.chat, "completion": engine.completion, "responses": engine.responses}[
        route
    ]
    started = time.monotonic()
    try:
        answer = await until_done(request, call(body, request_id.get()), ticket)
    except ClientGoneError:
        ticket.release()
        _count(ctx, model, route, CLIENT_GONE)
        return Response(status_code=CLIENT_GONE)
    except CortexError as exc:
        ticket.release()
        _count(ctx, model, route, exc.status_code)
        raise
    except BaseException:
        ticket.release()
        raise
    if isinstance(answer, bytes):
        ticket.release()
        _count(ctx, model, route, 200)
        logger.debug("%s answered in %.3f s", route, time.monotonic() - started)
        return Response(answer, media_type="application/json")
    on_end = functools.partial(_count, ctx, model, route)
    if route == "responses":
        events = responses_api.Sequenced(answer)
        return EventStream(events, ticket, on_end, ending=events.error_event)
    return EventStream(answer, ticket, on_end)


def _count(ctx: AppContext, model: str, route: str, status: int) -> None:
    ctx.metrics.requests.labels(model, route, str(status)).inc()
