"""A gateway served in this process on free loopback ports, and helpers to test it with.

Tests and benchmarks only.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from cortex_core.config import (
    AuthOptions,
    EvictionOptions,
    GatewayConfig,
    GatewayOptions,
    ModelsConfig,
    NeuronPeer,
)
from cortex_gateway.server import bind, serve
from cortex_gateway.testing.neuron import FakeNeuron

__all__ = ["RunningGateway", "eventually", "fleet_config", "running_gateway", "scrape"]


@dataclass(frozen=True)
class RunningGateway:
    """A gateway served in this process: its client API and metrics URLs, and its registry."""

    url: str
    metrics_url: str
    registry: CollectorRegistry


@asynccontextmanager
async def running_gateway(
    config: GatewayConfig, models: ModelsConfig | None = None
) -> AsyncIterator[RunningGateway]:
    """Serve a gateway on free 127.0.0.1 ports until the block ends; ready when it yields."""
    options = msgspec.structs.replace(
        config.gateway, listen="127.0.0.1:0", metrics_listen="127.0.0.1:0"
    )
    listeners = bind(options)
    registry = CollectorRegistry()
    stop = asyncio.Event()
    server = asyncio.create_task(
        serve(
            msgspec.structs.replace(config, gateway=options),
            models or ModelsConfig(),
            listeners,
            stop.wait,
            registry=registry,
        )
    )
    url, metrics_url = listeners.urls
    try:
        async with aiohttp.ClientSession() as session:
            probe = asyncio.create_task(session.get(url + "/health"))
            done, _ = await asyncio.wait({probe, server}, return_when=asyncio.FIRST_COMPLETED)
            if server in done:
                probe.cancel()
                server.result()  # start-up failed: raise why
            (await probe).release()
        yield RunningGateway(url, metrics_url, registry)
    finally:
        stop.set()
        await server
        listeners.close()


def fleet_config(
    *neurons: FakeNeuron,
    auth: AuthOptions | None = None,
    eviction: EvictionOptions | None = None,
    **gateway: Any,
) -> GatewayConfig:
    """A gateway config over ``neurons`` (named ``n1``, ``n2``…), polling every 50 ms."""
    peers = tuple(
        NeuronPeer(name=f"n{i}", endpoint=n.url, token=n.token) for i, n in enumerate(neurons, 1)
    )
    return GatewayConfig(
        gateway=GatewayOptions(**{"poll_interval_s": 0.05, **gateway}),
        eviction=eviction or EvictionOptions(),
        auth=auth or AuthOptions(),
        neurons=peers,
    )


async def scrape(metrics_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics``, by name and labels, parsed by prometheus_client."""
    async with aiohttp.ClientSession() as session, session.get(metrics_url + "/metrics") as resp:
        text = await resp.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Wait until ``check()`` holds (a state reached through polls has no event to await).

    Raises:
        TimeoutError: it did not hold within ``within`` seconds.
    """
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - the state is another server's
            await asyncio.sleep(0.01)
