"""Serving the neuron with Hypercorn, and its orderly shutdown (DESIGN §3, Deactivation).

On SIGTERM or SIGINT the listener stays open: new work is refused with 503 ``shutting_down``,
``/health`` says ``draining``, requests in flight finish (up to ``drain_timeout_s``), every
engine shuts down in parallel (bounded), and only then does the server stop.
"""

import asyncio
import logging
import signal
import socket
from typing import Any

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig

from cortex_core.config import NeuronConfig
from cortex_neuron.app import create_app
from cortex_neuron.context import AppContext

__all__ = ["serve"]

logger = logging.getLogger(__name__)

_ENGINE_STOP_TIMEOUT_S = 30.0


def listen(config: NeuronConfig) -> socket.socket:
    """Bind the listening socket (port 0 picks a free port)."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    return socket.create_server((config.host, config.port), family=family, backlog=1024)


async def serve(ctx: AppContext, sock: socket.socket) -> None:
    """Serve on ``sock`` until a signal, then drain, stop the engines and return."""
    host, port = sock.getsockname()[:2]
    hc = HypercornConfig()
    hc.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns and closes it
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = 5.0
    hc.keep_alive_timeout = 75.0
    stopping = asyncio.Event()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, signum, stopping)
    logger.info("listening on http://%s:%d", host, port)
    app: Any = create_app(ctx)  # Starlette's ASGI types are looser than Hypercorn's
    server = asyncio.create_task(hypercorn_serve(app, hc, shutdown_trigger=stopped.wait))
    signalled = asyncio.create_task(stopping.wait())
    await asyncio.wait((server, signalled), return_when=asyncio.FIRST_COMPLETED)
    if server.done():
        signalled.cancel()
        server.result()
        return
    drain = ctx.config.harness.vllm.drain_timeout_s
    logger.info("draining: requests in flight have up to %.0f s", drain)
    await ctx.lifecycle.drain(drain)
    await ctx.lifecycle.stop(_ENGINE_STOP_TIMEOUT_S)
    logger.info("engines stopped; exiting")
    stopped.set()
    await server


def _on_signal(signum: int, stopping: asyncio.Event) -> None:
    if stopping.is_set():
        logger.info("%s again: already shutting down", signal.Signals(signum).name)
    stopping.set()
