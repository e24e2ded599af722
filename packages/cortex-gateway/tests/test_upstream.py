"""The aiohttp adapter: every failure of a neuron becomes one error of the shared tree."""

import asyncio
import socket

import pytest
from aiohttp import web

from cortex_core.config import NeuronPeer
from cortex_core.errors import (
    ModelBusyError,
    UpstreamError,
    UpstreamTimeoutError,
)
from cortex_core.wire.control import Health
from cortex_gateway.upstream import AiohttpUpstream, ConnectError, peer_error

pytestmark = pytest.mark.timeout(30)


async def garbage(request: web.Request) -> web.Response:
    return web.Response(body=b"<html>not json</html>")


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(10)
    return web.Response()


async def hang_up(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.close()
    return web.Response()


@pytest.fixture
async def odd_neuron():
    app = web.Application()
    app.add_routes(
        [web.get("/garbage", garbage), web.get("/slow", slow), web.get("/hang-up", hang_up)]
    )
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    yield NeuronPeer(name="odd", endpoint=f"http://127.0.0.1:{sock.getsockname()[1]}")
    await runner.cleanup()


async def test_each_failure_is_translated(odd_neuron):
    closed = socket.create_server(("127.0.0.1", 0))
    nobody = NeuronPeer(name="gone", endpoint=f"http://127.0.0.1:{closed.getsockname()[1]}")
    closed.close()
    async with AiohttpUpstream.open() as upstream:
        with pytest.raises(UpstreamError, match="unreadable answer to GET /garbage"):
            await upstream.get(odd_neuron, "/garbage", Health, limit_s=5)
        with pytest.raises(UpstreamTimeoutError, match="did not answer in time"):
            await upstream.get(odd_neuron, "/slow", Health, limit_s=0.1)
        with pytest.raises(UpstreamError, match="broke the connection"):
            await upstream.get(odd_neuron, "/hang-up", Health, limit_s=5)
        with pytest.raises(ConnectError, match="cannot connect to neuron gone"):
            await upstream.get(nobody, "/health", Health, limit_s=5)


def test_a_neuron_error_is_rebuilt_by_its_code():
    body = b'{"error": {"message": "2 in flight", "type": "conflict_error", "code": "model_busy"}}'
    error = peer_error("n1", 409, body, "7")
    assert isinstance(error, ModelBusyError)
    assert (error.message, error.retry_after) == ("2 in flight", 7.0)
    assert peer_error("n1", 409, body, "Wed, 21 Oct 2026 07:28:00 GMT").retry_after is None
    assert peer_error("n1", 409, body, None).retry_after is None


def test_an_error_without_an_envelope_is_an_upstream_error():
    error = peer_error("n1", 502, b"Bad Gateway", None)
    assert type(error) is UpstreamError
    assert error.message == "neuron n1 answered HTTP 502 without an error envelope"
