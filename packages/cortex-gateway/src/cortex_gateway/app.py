"""The gateway's app factory: ``create_app(config, models, registry=...)`` and its lifespan.

The lifespan opens the neurons' client session, polls every neuron once (so the first request
already sees the fleet), keeps polling in the background, and builds the frozen
:class:`~cortex_gateway.context.AppContext` that every handler reads. Nothing happens at import
time; serving is :mod:`cortex_gateway.server`'s job.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware

from cortex_core.asgi import RequestContextMiddleware
from cortex_core.config import GatewayConfig, ModelsConfig
from cortex_gateway.auth import AuthMiddleware, Keys
from cortex_gateway.context import AppContext
from cortex_gateway.control.lifecycle import Lifecycle, read_templates
from cortex_gateway.control.queue import Queue
from cortex_gateway.control.routing import Router
from cortex_gateway.control.upkeep import Upkeep
from cortex_gateway.errors import EXCEPTION_HANDLERS, error_body
from cortex_gateway.fleet.catalogue import Catalogue
from cortex_gateway.fleet.node import Node
from cortex_gateway.fleet.poller import Poller
from cortex_gateway.metrics import Metrics
from cortex_gateway.routes import routes
from cortex_gateway.upstream import AiohttpUpstream
from cortex_gateway.web.recent import Recent

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(
    config: GatewayConfig, models: ModelsConfig, *, registry: CollectorRegistry
) -> Starlette:
    """The gateway's client-facing ASGI app; its metrics go into ``registry``.

    Raises:
        ConfigError: a chat template named in models.toml cannot be read.
    """
    templates = read_templates(models, config.models_config or "models.toml")
    metrics = Metrics(registry)
    keys = Keys(config.auth)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, AppContext]]:
        async with AiohttpUpstream.open() as upstream:
            nodes = tuple(
                Node(peer, defrag_after=config.eviction.defrag_after_cycles)
                for peer in config.neurons
            )
            catalogue = Catalogue(models, nodes)
            recent = Recent()
            lifecycle = Lifecycle(
                upstream, metrics, load_timeout=config.gateway.load_timeout_s, recent=recent
            )
            options = config.gateway
            queue = Queue(
                metrics,
                per_model=options.queue_per_model,
                timeout_s=options.queue_timeout_s,
                pass_over_s=config.eviction.max_pass_over_s,
            )
            router = Router(catalogue, nodes, lifecycle, queue, metrics, templates, config.eviction)
            poller = Poller(
                nodes, upstream, metrics, interval=options.poll_interval_s, on_poll=queue.changed
            )
            upkeep = Upkeep(
                nodes,
                models,
                router,
                lifecycle,
                queue,
                idle_ttl_s=config.eviction.idle_ttl_s,
                interval_s=min(options.poll_interval_s, 5.0),
            )
            await poller.poll_all()
            logger.info(
                "%d of %d neurons healthy; serving %d models",
                sum(n.healthy for n in nodes),
                len(nodes),
                len(catalogue.model_list().data),
            )
            ctx = AppContext(
                config=config,
                nodes=nodes,
                catalogue=catalogue,
                router=router,
                queue=queue,
                upstream=upstream,
                metrics=metrics,
                keys=keys,
                recent=recent,
            )
            try:
                async with poller.running(), upkeep.running():
                    yield {"cortex": ctx}
            finally:
                lifecycle.cancel()

    return Starlette(
        routes=routes(),
        middleware=[
            Middleware(
                RequestContextMiddleware,
                daemon="gateway",
                access_logger="cortex_gateway.access",
                render_error=error_body,
            ),
            Middleware(AuthMiddleware, keys=keys),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
