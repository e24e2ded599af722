"""The gateway's HTTP routes (DESIGN §4), as a plain list; handlers read the app's context.

The inference routes are raw ASGI apps (:mod:`cortex_gateway.inference.exchange`, one per
dialect's route); the rest are small Starlette handlers over the fleet's polled state, plus the
operator's load and unload.
"""

import functools
import time
from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from cortex_core import decode, encode
from cortex_core.errors import NotFoundError, RequestTooLargeError
from cortex_gateway.context import context
from cortex_gateway.fleet.views import fleet_view, health_view
from cortex_gateway.inference.anthropic.call import AnthropicCall
from cortex_gateway.inference.anthropic.count import count_tokens
from cortex_gateway.inference.exchange import InferenceEndpoint
from cortex_gateway.inference.openai import OpenAICall
from cortex_gateway.inference.responses import ResponsesCall
from cortex_gateway.web.page import ui, ui_state, ui_static

__all__ = [
    "ADMIN_BODY_LIMIT",
    "AdminLoaded",
    "AdminModelRequest",
    "AdminNode",
    "AdminUnloaded",
    "Eviction",
    "routes",
]


class AdminModelRequest(msgspec.Struct, kw_only=True, frozen=True):
    """``POST /admin/models/load`` and ``/unload``: a model, optionally one node.

    ``force``: for a load, load even where free memory looks short (the neuron judges); for an
    unload, abort the model's requests in flight. ``drain`` (unload only): stop admitting and
    wait for the requests in flight to finish (the neuron's ``drain_timeout_s``).
    """

    model: str
    node: str | None = None
    force: bool = False
    drain: bool = False


class Eviction(msgspec.Struct, kw_only=True, frozen=True):
    """A model unloaded to make room."""

    model: str
    node: str


class AdminLoaded(msgspec.Struct, kw_only=True, frozen=True):
    """Answer to ``/admin/models/load``: where it is loaded, the seconds it took, what made room."""

    status: Literal["loaded"] = "loaded"
    model: str
    node: str
    seconds: float = 0.0
    evicted: list[Eviction] = msgspec.field(default_factory=list)


class AdminNode(msgspec.Struct, kw_only=True, frozen=True):
    """Answer to ``/admin/nodes/{name}/cordon``, ``/uncordon`` and ``/drain``: its new state."""

    node: str
    cordoned: bool
    draining: bool


class AdminUnloaded(msgspec.Struct, kw_only=True, frozen=True):
    """Answer to ``/admin/models/unload``: the nodes it was unloaded from."""

    status: Literal["unloaded"] = "unloaded"
    model: str
    nodes: list[str]


ADMIN_BODY_LIMIT = 65536
"""An operator's request is a few names; anything bigger is refused before it is read."""


async def _admin_body(request: Request) -> AdminModelRequest:
    size = 0
    chunks = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > ADMIN_BODY_LIMIT:
            raise RequestTooLargeError(f"An admin request takes at most {ADMIN_BODY_LIMIT} bytes")
        chunks.append(chunk)
    return decode(b"".join(chunks), AdminModelRequest)


def _json(obj: object, status: int = 200) -> Response:
    return Response(encode(obj), status_code=status, media_type="application/json")


async def health(request: Request) -> Response:
    """``GET /health`` and ``/``: 503 when no node is healthy (for load balancers)."""
    view = health_view(context(request.scope).nodes)
    return _json(view, 200 if view.nodes.healthy else 503)


async def fleet(request: Request) -> Response:
    """``GET /fleet``: nodes, devices, models, as last polled."""
    ctx = context(request.scope)
    return _json(fleet_view(ctx.nodes, ctx.catalogue, ctx.queue.waiting()))


async def list_models(request: Request) -> Response:
    """``GET /v1/models``: every model the fleet can serve now, aliases included."""
    return _json(context(request.scope).catalogue.model_list())


async def get_model(request: Request) -> Response:
    """``GET /v1/models/{id}`` (the id may hold a slash)."""
    return _json(context(request.scope).catalogue.card(request.path_params["model_id"]))


async def admin_load(request: Request) -> Response:
    """``POST /admin/models/load``: load a model (on a node, or where placement says)."""
    ctx = context(request.scope)
    body = await _admin_body(request)
    started = time.perf_counter()
    model_id = ctx.catalogue.resolve(body.model)
    target = await ctx.router.load(model_id, body.node, force=body.force)
    seconds = round(time.perf_counter() - started, 3)
    node = target.node.name
    evicted = [Eviction(model=m, node=node) for m in target.evicted]
    return _json(AdminLoaded(model=model_id, node=node, seconds=seconds, evicted=evicted))


async def admin_unload(request: Request) -> Response:
    """``POST /admin/models/unload``: unload a model from a node, or from every node."""
    ctx = context(request.scope)
    body = await _admin_body(request)
    model_id = ctx.catalogue.canonical(body.model)
    nodes = await ctx.router.unload(model_id, body.node, force=body.force, drain=body.drain)
    return _json(AdminUnloaded(model=model_id, nodes=nodes))


async def admin_node(request: Request) -> Response:
    """``POST /admin/nodes/{name}/{cordon,uncordon,drain}``: steer a node's new loads."""
    ctx = context(request.scope)
    name, action = request.path_params["name"], request.path_params["action"]
    if action not in ("cordon", "uncordon", "drain"):
        raise NotFoundError(f"No route {request.url.path}")
    node = ctx.router.steer(name, cordon=action != "uncordon", drain=action == "drain")
    return _json(AdminNode(node=node.name, cordoned=node.cordoned, draining=node.draining))


def _openai(path: str) -> InferenceEndpoint:
    return InferenceEndpoint(functools.partial(OpenAICall, path), "openai")


def routes() -> list[BaseRoute]:
    """Every route of the gateway's client listener."""
    return [  # the busiest first: Starlette tries them in order
        Route("/v1/chat/completions", _openai("/v1/chat/completions"), methods=["POST"]),
        Route("/v1/messages", InferenceEndpoint(AnthropicCall, "anthropic"), methods=["POST"]),
        Route("/v1/completions", _openai("/v1/completions"), methods=["POST"]),
        Route("/v1/responses", InferenceEndpoint(ResponsesCall, "responses"), methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/", health, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/fleet", fleet, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
        Route("/admin/models/load", admin_load, methods=["POST"]),
        Route("/admin/models/unload", admin_unload, methods=["POST"]),
        Route("/admin/nodes/{name}/{action}", admin_node, methods=["POST"]),
        Route("/ui", ui, methods=["GET"]),
        Route("/ui/state", ui_state, methods=["GET"]),
        Route("/ui/static/{name}", ui_static, methods=["GET"]),
    ]
