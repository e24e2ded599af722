"""Serving the gateway: its two listeners, bound here, served by Hypercorn in this process.

:func:`bind` opens both sockets first, so a busy port is a clear error before anything starts
and port 0 works (tests, ``--listen 127.0.0.1:0``). :func:`serve` hands Hypercorn a duplicate
of each socket, runs the client app and the metrics app until ``shutdown_trigger`` returns,
then closes both listeners (new connections are refused) and finishes requests in flight for
up to :data:`GRACEFUL_TIMEOUT_S`. Signals are the caller's (the CLI's) to turn into that
trigger.
"""

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from cortex_core.asgi.serving import listen, serve as serve_app, url_of
from cortex_core.config import GatewayConfig, GatewayOptions, ModelsConfig
from cortex_gateway.app import create_app
from cortex_gateway.metrics import metrics_app

__all__ = ["GRACEFUL_TIMEOUT_S", "Listeners", "bind", "serve"]

logger = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_S = 10.0
"""How long requests in flight may go on after the shutdown trigger."""


@dataclass(frozen=True)
class Listeners:
    """The bound sockets of the client API and of ``/metrics``."""

    main: socket.socket
    metrics: socket.socket

    @property
    def urls(self) -> tuple[str, str]:
        """``http://host:port`` of each, with the port actually bound."""
        return url_of(self.main), url_of(self.metrics)

    def close(self) -> None:
        """Close both sockets (Hypercorn closes its own duplicates)."""
        self.main.close()
        self.metrics.close()


def bind(options: GatewayOptions) -> Listeners:
    """Bind ``listen`` and ``metrics_listen``.

    Raises:
        OSError: an address cannot be bound (in use, not local, no permission).
    """
    main = listen(options.listen)
    try:
        return Listeners(main=main, metrics=listen(options.metrics_listen))
    except OSError:
        main.close()
        raise


async def serve(
    config: GatewayConfig,
    models: ModelsConfig,
    listeners: Listeners,
    shutdown_trigger: Callable[[], Awaitable[object]],
    *,
    registry: CollectorRegistry | None = None,
) -> None:
    """Serve the gateway on ``listeners`` until ``shutdown_trigger`` returns.

    Raises:
        ConfigError: a chat template named in models.toml cannot be read.
    """
    registry = registry if registry is not None else CollectorRegistry()
    app = create_app(config, models, registry=registry)
    main_url, metrics_url = listeners.urls
    logger.info("cortex gateway on %s, metrics on %s/metrics", main_url, metrics_url)
    errorlog = logging.getLogger("cortex_gateway.server")
    apps = ((app, listeners.main), (metrics_app(registry), listeners.metrics))
    async with asyncio.TaskGroup() as group:
        for asgi, sock in apps:
            group.create_task(
                serve_app(
                    asgi,
                    sock,
                    _closing(sock, shutdown_trigger),
                    graceful_s=GRACEFUL_TIMEOUT_S,
                    errorlog=errorlog,
                )
            )


def _closing(
    sock: socket.socket, trigger: Callable[[], Awaitable[object]]
) -> Callable[[], Awaitable[None]]:
    """``trigger``, then close ``sock``.

    Once Hypercorn closes its duplicate too, a new connection is refused at once (a load
    balancer moves on) instead of waiting in the backlog of a socket nobody accepts on, while
    the streams in flight finish.
    """

    async def wait() -> None:
        await trigger()
        sock.close()

    return wait
