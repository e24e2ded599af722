"""Binding a listener and serving an ASGI app on it with Hypercorn, the same way for both daemons.

:func:`listen` binds first, so a busy port is a clear error before anything starts and port 0
works (tests). :func:`serve` hands Hypercorn a duplicate of the socket (the caller still owns
and closes its own) and one configuration: no Hypercorn access log (each daemon logs requests
itself, with the request id), its errors to ``errorlog``, connections kept alive longer than
clients' pools keep them, and ``graceful_s`` for requests in flight once ``shutdown_trigger``
returns. Needs the ``server`` extra (Hypercorn); signals are the caller's.
"""

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

__all__ = ["KEEP_ALIVE_S", "listen", "serve", "url_of"]

KEEP_ALIVE_S = 75.0
"""Idle keep-alive connections live this long: longer than aiohttp's and load balancers' pools
keep them (15 s and 60 s), so the server never closes one a client is about to reuse."""


def listen(address: str) -> socket.socket:
    """A listening socket on ``host:port`` (``[v6]:port`` for IPv6; port 0: any free port).

    Raises:
        OSError: the address cannot be bound (in use, not local, no permission); the message
            names it.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, int(port)), family=family, backlog=1024)
    except OSError as exc:
        raise OSError(exc.errno, f"{address}: {exc.strerror}") from exc


def url_of(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket, with the port actually bound."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(
    app: Any,
    sock: socket.socket,
    shutdown_trigger: Callable[[], Awaitable[object]],
    *,
    graceful_s: float,
    errorlog: logging.Logger,
    shutdown_s: float = 60.0,
) -> None:
    """Serve ``app`` on ``sock`` until ``shutdown_trigger`` returns and requests have ended.

    ``graceful_s`` bounds the requests still in flight after the trigger; ``shutdown_s`` the
    app's lifespan shutdown (where a daemon stops what it started).
    """
    config = Config()
    config.bind = [f"fd://{os.dup(sock.fileno())}"]
    config.accesslog = None
    config.errorlog = errorlog
    config.keep_alive_timeout = KEEP_ALIVE_S
    config.graceful_timeout = graceful_s
    config.shutdown_timeout = shutdown_s
    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger)
