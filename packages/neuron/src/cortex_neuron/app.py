"""The neuron's ASGI app: :func:`build_context` makes its parts, :func:`create_app` serves them.

The lifespan starts the background work (the engine's warm-up, device readings, engine checks,
rescans of the model dirs, the default models), hands handlers the context through the lifespan
state, and, on the way out, shuts every engine down, bounded by ``drain_timeout_s``: the one
place that does.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, make_asgi_app
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from cortex_core import codec
from cortex_core.asgi import RequestContextMiddleware
from cortex_core.config import NeuronConfig
from cortex_core.errors import (
    CortexError,
    InvalidRequestError,
    NotFoundError,
    to_envelope,
)
from cortex_neuron import control, inference
from cortex_neuron.activation import Activation
from cortex_neuron.context import AppContext
from cortex_neuron.devices import Devices
from cortex_neuron.engine.base import EngineStarter, Warmer
from cortex_neuron.lifecycle import Lifecycle
from cortex_neuron.metrics import NeuronMetrics
from cortex_neuron.middleware import AuthMiddleware

__all__ = ["build_context", "create_app"]

logger = logging.getLogger(__name__)

_REFRESH_S = 1.0  # device readings and engine checks
_RESCAN_EVERY = 5  # refreshes between rescans of the model dirs


def build_context(
    config: NeuronConfig,
    starter: EngineStarter,
    *,
    registry: CollectorRegistry | None = None,
    nvml: Any = None,
    warmer: Warmer | None = None,
) -> AppContext:
    """Probe the devices and assemble the neuron's parts (no engine starts here).

    Its metrics go into ``registry`` (a new one when ``None``); ``warmer`` readies ``starter``
    from start-up.
    """
    spare_mb = warmer.memory_mb if warmer is not None else 0
    devices = Devices.probe(config.harness.vllm, nvml, spare_mb)
    metrics = NeuronMetrics(
        registry if registry is not None else CollectorRegistry(auto_describe=True)
    )
    lifecycle = Lifecycle(config.harness.vllm, devices, starter, metrics)
    metrics.watch(lifecycle.states)
    return AppContext(
        config=config,
        devices=devices,
        lifecycle=lifecycle,
        metrics=metrics,
        activation=Activation(config.default_models),
        warmer=warmer,
    )


def create_app(ctx: AppContext) -> Starlette:
    """The Starlette app serving ``ctx``."""
    routes = [
        Route("/health", control.health),
        Route("/discovery", control.discovery),
        Route("/models", control.models),
        Route("/models/load", control.load, methods=["POST"]),
        Route("/models/unload", control.unload, methods=["POST"]),
        Route("/models/{model_id:path}/endpoint", control.endpoint),
        Route("/tokenize", inference.tokenize, methods=["POST"]),
        Route("/v1/models", inference.list_models),
        Route("/v1/chat/completions", inference.chat_completions, methods=["POST"]),
        Route("/v1/completions", inference.completions, methods=["POST"]),
        Route("/v1/responses", inference.responses, methods=["POST"]),
        Route("/metrics", _Exposition(ctx.metrics.registry), methods=["GET"]),
    ]
    middleware = [
        Middleware(RequestContextMiddleware, daemon="neuron", access_logger="cortex_neuron.access")
    ]
    if ctx.config.auth_token:
        middleware.append(Middleware(AuthMiddleware, token=ctx.config.auth_token))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lambda app: _lifespan(ctx),
        exception_handlers={
            CortexError: _cortex_error,
            HTTPException: _http_error,
            msgspec.ValidationError: _invalid,
            msgspec.DecodeError: _invalid,
        },
    )
    return app


class _Exposition:
    """``GET /metrics`` itself (a mounted app would answer only ``/metrics/``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._app = make_asgi_app(registry=registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


@contextlib.asynccontextmanager
async def _lifespan(ctx: AppContext) -> AsyncIterator[dict[str, AppContext]]:
    await ctx.lifecycle.rescan()
    background = [
        asyncio.create_task(_refresh(ctx)),
        asyncio.create_task(ctx.activation.run(ctx.lifecycle)),
    ]
    if ctx.warmer is not None:
        background.append(asyncio.create_task(_warm(ctx.warmer, ctx)))
    try:
        yield {"neuron": ctx}
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await ctx.lifecycle.stop(ctx.config.harness.vllm.drain_timeout_s)
        if ctx.warmer is not None:
            await ctx.warmer.close()


async def _warm(warmer: Warmer, ctx: AppContext) -> None:
    started = time.monotonic()
    try:
        await warmer.warm(ctx.devices.kind)
    except Exception:  # the first load meets the same failure, as its own error
        logger.exception("warming the engine up failed")
        return
    logger.info("engine warmed up in %.1f s", time.monotonic() - started)


async def _refresh(ctx: AppContext) -> None:
    tick = 0
    while True:
        await asyncio.sleep(_REFRESH_S)
        await asyncio.to_thread(ctx.devices.refresh)
        ctx.lifecycle.check_engines()
        tick += 1
        if tick % _RESCAN_EVERY == 0:
            await ctx.lifecycle.rescan()


def _error_response(exc: CortexError) -> Response:
    return Response(
        codec.encode(to_envelope(exc)),
        exc.status_code,
        headers=exc.headers,
        media_type="application/json",
    )


async def _cortex_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CortexError)
    return _error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error_response(NotFoundError(f"no route {request.url.path}"))
    error = InvalidRequestError(str(exc.detail), code="method_not_allowed")
    response = _error_response(error)
    response.status_code = exc.status_code
    response.headers.update(exc.headers or {})
    return response


async def _invalid(request: Request, exc: Exception) -> Response:
    return _error_response(InvalidRequestError(str(exc)))
