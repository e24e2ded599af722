"""Serving the neuron with Hypercorn, and its orderly shutdown (DESIGN §3, Deactivation).

On SIGTERM or SIGINT the listener stays open while the neuron drains: new work is refused with
503 ``shutting_down``, ``/health`` says ``draining``, requests in flight finish (up to
``drain_timeout_s``), and those still running then are ended. Only then does the server stop;
its lifespan shuts every engine down (the one owner of that step, :func:`cortex_neuron.app`).
"""

import asyncio
import logging
import signal
import socket

from cortex_core.asgi.serving import listen as bind, serve as serve_app, url_of
from cortex_core.config import NeuronConfig
from cortex_neuron.app import create_app
from cortex_neuron.context import AppContext

__all__ = ["listen", "serve"]

logger = logging.getLogger(__name__)

_GRACEFUL_S = 5.0
"""Once drained, how long the server waits for requests still answering (their last bytes)."""


def listen(config: NeuronConfig) -> socket.socket:
    """Bind the listening socket (port 0 picks a free port)."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    return bind(f"{host}:{config.port}")


async def serve(ctx: AppContext, sock: socket.socket) -> None:
    """Serve on ``sock`` until a signal, then drain, stop the engines and return (closing it)."""
    try:
        await _serve(ctx, sock)
    finally:
        sock.close()


async def _serve(ctx: AppContext, sock: socket.socket) -> None:
    stopping = asyncio.Event()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, signum, stopping)
    logger.info("listening on %s", url_of(sock))
    drain = ctx.config.harness.vllm.drain_timeout_s
    server = asyncio.create_task(
        serve_app(
            create_app(ctx),
            sock,
            stopped.wait,
            graceful_s=_GRACEFUL_S,
            errorlog=logging.getLogger("hypercorn.error"),
            shutdown_s=drain + _GRACEFUL_S,
        )
    )
    signalled = asyncio.create_task(stopping.wait())
    await asyncio.wait((server, signalled), return_when=asyncio.FIRST_COMPLETED)
    if server.done():
        signalled.cancel()
        server.result()
        return
    logger.info("draining: requests in flight have up to %.0f s", drain)
    await ctx.lifecycle.drain(drain)
    stopped.set()
    await server
    logger.info("engines stopped; exiting")


def _on_signal(signum: int, stopping: asyncio.Event) -> None:
    if stopping.is_set():
        logger.info("%s again: already shutting down", signal.Signals(signum).name)
    stopping.set()
