"""Helpers for tests that run a neuron in-process: a loopback server and fake model folders.

Used by this package's tests and by the repository's integration tests (gateway → neuron on the
fake engine). Real sockets on 127.0.0.1, a free port each time.
"""

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cortex_core.asgi.serving import serve

__all__ = ["eventually", "fake_model", "serving"]


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` (lifespan included) on a free loopback port; yields its base URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    stop = asyncio.Event()
    errorlog = logging.getLogger("hypercorn.error")
    server = asyncio.create_task(serve(app, sock, stop.wait, graceful_s=1.0, errorlog=errorlog))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await server
        sock.close()  # the server closed its own duplicate


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
