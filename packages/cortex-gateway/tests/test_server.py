"""Binding the two listeners and serving them; start-up refusals are clear errors."""

import asyncio
import socket

import pytest
from prometheus_client import CollectorRegistry

from cortex_core.config import (
    ConfigError,
    GatewayConfig,
    GatewayOptions,
    ModelProfile,
    ModelsConfig,
)
from cortex_gateway.app import create_app
from cortex_gateway.server import bind, serve

pytestmark = pytest.mark.timeout(30)


def test_bind_reports_the_ports_it_got_and_refuses_a_busy_one():
    listeners = bind(GatewayOptions(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0"))
    try:
        main, metrics = listeners.urls
        assert main.startswith("http://127.0.0.1:")
        assert metrics != main
        busy = main.removeprefix("http://")
        with pytest.raises(OSError, match="in use"):
            bind(GatewayOptions(listen="127.0.0.1:0", metrics_listen=busy))
        with pytest.raises(OSError, match="in use"):
            bind(GatewayOptions(listen=busy, metrics_listen="127.0.0.1:0"))
    finally:
        listeners.close()


def test_an_ipv6_listener_is_written_in_brackets():
    listeners = bind(GatewayOptions(listen="[::1]:0", metrics_listen="127.0.0.1:0"))
    try:
        assert listeners.urls[0].startswith("http://[::1]:")
        assert listeners.main.family == socket.AF_INET6
    finally:
        listeners.close()


def test_an_unreadable_chat_template_is_a_config_error(tmp_path):
    models = ModelsConfig(models=(ModelProfile(id="m", chat_template=str(tmp_path / "missing")),))
    with pytest.raises(ConfigError, match=r"models\[0\]\.chat_template: cannot read chat template"):
        create_app(GatewayConfig(), models, registry=CollectorRegistry())


async def test_serve_stops_when_its_trigger_returns():
    listeners = bind(GatewayOptions(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0"))
    stop = asyncio.Event()
    server = asyncio.create_task(serve(GatewayConfig(), ModelsConfig(), listeners, stop.wait))
    host, port = listeners.urls[1].removeprefix("http://").split(":")
    answers = []
    for path in (b"/metrics", b"/"):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers.append(await reader.read())
        writer.close()
    stop.set()
    await asyncio.wait_for(server, 15)
    listeners.close()
    assert answers[0].startswith(b"HTTP/1.1 200")
    assert b"# TYPE cortex_requests_total counter" in answers[0]
    assert answers[1].startswith(b"HTTP/1.1 404")
