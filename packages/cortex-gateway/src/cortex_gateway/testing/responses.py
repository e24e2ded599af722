"""The fake neuron's ``/v1/responses``: OpenAI Responses answers, streaming or not.

As the real neuron on its fake engine answers: ``tok0 tok1 …`` (``max_output_tokens`` words,
else the fake's ``chunks``), usage with :data:`~cortex_gateway.testing.replies.PROMPT_TOKENS`
input tokens, and a stream of typed events, ``response.created`` first and
``response.completed`` last, each with its ``sequence_number``. ``previous_response_id`` is
refused with a 400 naming it. The fake's knobs apply: ``latency`` (keep-alive comments
meanwhile), ``infer_error``, ``chunk_interval``, ``die_after`` (delta events sent before the
connection is cut), ``send_done`` (whether ``response.completed`` is sent), ``races``,
draining and admission. An aborted stream ends with the Responses ``error`` event. Tests
and benchmarks only.
"""

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from cortex_core import encode
from cortex_core.asgi import responses_error_event
from cortex_core.errors import InvalidRequestError, ShuttingDownError
from cortex_core.ids import check_model_id
from cortex_gateway.testing import envelopes, replies
from cortex_gateway.testing.models import Admitted
from cortex_gateway.testing.replies import PROMPT_TOKENS

if TYPE_CHECKING:
    from cortex_gateway.testing.neuron import FakeNeuron

__all__ = ["serve"]


class _Request(msgspec.Struct):
    model: str
    stream: bool | None = False
    max_output_tokens: int | None = None
    instructions: str | None = None
    previous_response_id: str | None = None


def _response(req: _Request, tokens: int, *, done: bool) -> dict[str, Any]:
    text = "".join(f"tok{i} " for i in range(tokens))
    message = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    usage = {
        "input_tokens": PROMPT_TOKENS,
        "output_tokens": tokens,
        "total_tokens": PROMPT_TOKENS + tokens,
    }
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": 0,
        "status": "completed" if done else "in_progress",
        "model": req.model,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "output": [message] if done else [],
        "usage": usage if done else None,
    }


def _event(number: int, kind: str, **fields: Any) -> bytes:
    body = {"type": kind, "sequence_number": number, **fields}
    return f"event: {kind}\ndata: {json.dumps(body)}\n\n".encode()


async def serve(neuron: "FakeNeuron", request: web.Request, body: bytes) -> web.StreamResponse:
    """Answer one ``/v1/responses`` request for ``neuron``."""
    req = envelopes.decode(body, _Request)
    if req.previous_response_id is not None:
        raise InvalidRequestError(
            "previous_response_id is not supported", param="previous_response_id"
        )
    if neuron.draining:
        raise ShuttingDownError("the neuron is shutting down", retry_after=5)
    model_id = check_model_id(req.model)
    if neuron.races.get(model_id) and model_id in neuron.models:
        neuron.races[model_id] -= 1
        neuron._release(neuron.models[model_id], "available")
    model = neuron.serving(model_id)
    if neuron.infer_error is not None:
        raise neuron.infer_error
    admitted = model.admit(neuron.concurrency, neuron.max_queued)
    tokens = req.max_output_tokens or neuron.chunks
    try:
        if not req.stream:
            payload = encode(_response(req, tokens, done=True))
            return web.Response(body=payload, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        number = 0
        if await _prefill(neuron, response, admitted):
            return await _aborted(response, admitted, number)
        await response.write(
            _event(number, "response.created", response=_response(req, 0, done=False))
        )
        for i in range(tokens + 1):
            if await neuron._cut(request, i, admitted):
                return response
            if await neuron._pause(admitted, neuron.chunk_interval):
                return await _aborted(response, admitted, number + 1)
            number += 1
            if i < tokens:
                where = {"item_id": "msg_fake", "output_index": 0, "content_index": 0}
                await response.write(
                    _event(number, "response.output_text.delta", **where, delta=f"tok{i} ")
                )
        done = _event(number, "response.completed", response=_response(req, tokens, done=True))
        if neuron.send_done:  # else a broken neuron's: the stream ends without its last event
            await response.write(done)
        await response.write_eof()
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        neuron.aborted += 1
        neuron.abort_seen.set()
        raise
    finally:
        model.admitted.discard(admitted)
        model.last_used = time.time()


async def _prefill(neuron: "FakeNeuron", response: web.StreamResponse, admitted: Admitted) -> bool:
    """Wait ``latency`` (a comment every ``keepalive_s``); whether it was aborted meanwhile."""
    waited = 0.0
    while waited < neuron.latency:
        step = min(neuron.keepalive_s, neuron.latency - waited)
        if await neuron._pause(admitted, step):
            return True
        waited += step
        if waited < neuron.latency:
            await response.write(replies.KEEPALIVE)
    return False


async def _aborted(
    response: web.StreamResponse, admitted: Admitted, number: int
) -> web.StreamResponse:
    """End an aborted stream as the real neuron does: the Responses ``error`` event."""
    assert admitted.error is not None
    await response.write(responses_error_event(admitted.error, number))
    await response.write_eof()
    return response
