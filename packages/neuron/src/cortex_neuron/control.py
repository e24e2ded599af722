"""The lifecycle API (DESIGN §3): discovery, health, the model list, load, unload, endpoint.

``/health``, ``/discovery`` and ``/models`` answer from memory at once, also while engines
start or stop; ``/models/load`` and ``/models/unload`` return when the engine serves or is gone.
"""

import time

from starlette.requests import Request
from starlette.responses import Response

from cortex_core import codec
from cortex_core.ids import check_model_id
from cortex_core.wire.control import (
    EndpointResponse,
    Health,
    LoadResponse,
    ModelSpec,
    UnloadRequest,
    UnloadResponse,
)
from cortex_neuron.context import context

__all__ = ["discovery", "endpoint", "health", "load", "models", "unload"]


def json_response(obj: object, status: int = 200) -> Response:
    """A JSON response encoded by msgspec."""
    return Response(codec.encode(obj), status, media_type="application/json")


async def discovery(request: Request) -> Response:
    """``GET /discovery``."""
    return json_response(context(request).devices.discovery)


async def health(request: Request) -> Response:
    """``GET /health``."""
    ctx = context(request)
    return json_response(
        Health(
            uptime_secs=int(time.monotonic() - ctx.started),
            draining=ctx.lifecycle.draining,
            devices=ctx.devices.health(),
            activation=ctx.activation.report(),
            models=ctx.lifecycle.activity(),
        )
    )


async def models(request: Request) -> Response:
    """``GET /models``."""
    return json_response(context(request).lifecycle.models())


async def load(request: Request) -> Response:
    """``POST /models/load``."""
    spec = codec.decode(await request.body(), ModelSpec)
    info = await context(request).lifecycle.load(spec)
    return json_response(LoadResponse(model=info))


async def unload(request: Request) -> Response:
    """``POST /models/unload``."""
    body = codec.decode(await request.body(), UnloadRequest)
    await context(request).lifecycle.unload(body)
    return json_response(UnloadResponse())


async def endpoint(request: Request) -> Response:
    """``GET /models/{model_id}/endpoint``: this neuron, as the caller reached it."""
    model_id = check_model_id(request.path_params["model_id"])
    context(request).lifecycle.serving(model_id)
    return json_response(EndpointResponse(url=str(request.base_url).rstrip("/")))
