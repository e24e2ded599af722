"""Helpers for tests that run a neuron in-process: a loopback server and fake model folders.

Used by this package's tests and by the repository's integration tests (gateway → neuron on the
fake engine). Real sockets on 127.0.0.1, a free port each time.
"""

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig

__all__ = ["eventually", "fake_model", "serving"]


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` (lifespan included) on a free loopback port; yields its base URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns and closes it
    config.accesslog = None
    config.graceful_timeout = 1.0
    stop = asyncio.Event()
    server = asyncio.create_task(hypercorn_serve(app, config, shutdown_trigger=stop.wait))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await server


def fake_model(model_dir: Path, model_id: str, weights_mb: int = 1) -> Path:
    """A folder the neuron takes for a model: ``config.json`` and weights of ``weights_mb``."""
    folder = model_dir / model_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (folder / "model.safetensors").write_bytes(b"\0" * (weights_mb * 1024 * 1024))
    return folder


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Wait until ``check()`` holds: a test waits on state, never sleeps and hopes.

    Raises:
        TimeoutError: it did not hold within ``within`` seconds.
    """
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - the state is a server's
            await asyncio.sleep(0.01)
