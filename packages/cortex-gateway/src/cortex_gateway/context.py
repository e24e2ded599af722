"""The one object every handler reads: the app's frozen context, built by the lifespan."""

from collections.abc import Sequence
from dataclasses import dataclass

from starlette.types import Scope

from cortex_core.config import GatewayConfig
from cortex_gateway.auth import Keys
from cortex_gateway.control.queue import Queue
from cortex_gateway.control.routing import Router
from cortex_gateway.fleet.catalogue import Catalogue
from cortex_gateway.fleet.node import Node
from cortex_gateway.metrics import Metrics
from cortex_gateway.upstream import Upstream
from cortex_gateway.web.recent import Recent

__all__ = ["AppContext", "context"]


@dataclass(frozen=True)
class AppContext:
    """What a request may use: config, fleet state, catalogue, router, upstream, metrics.

    ``keys``: the auth matrix's; ``recent``: the status page's buffers.
    """

    config: GatewayConfig
    nodes: Sequence[Node]
    catalogue: Catalogue
    router: Router
    queue: Queue
    upstream: Upstream
    metrics: Metrics
    keys: Keys
    recent: Recent


def context(scope: Scope) -> AppContext:
    """The app's context, from the lifespan state the server copies into ``scope``."""
    ctx: AppContext = scope["state"]["cortex"]
    return ctx
