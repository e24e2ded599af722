"""The ``cortex`` command, run from async tests beside an in-process gateway."""

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest
from click.testing import CliRunner, Result

from cortex_cli.main import main

Cli = Callable[..., Awaitable[Result]]


@pytest.fixture
def cli() -> Cli:
    """``await cli("status", "--url", url, CORTEX_API_KEY="k")``: the command, in a thread.

    CliRunner runs the command synchronously; the gateway serves on this test's event loop, so
    the command must not block it.
    """

    async def run(*args: str, **env: str) -> Result:
        return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)

    return run


@pytest.fixture
def closed_url() -> str:
    """A loopback URL nothing listens on."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"
