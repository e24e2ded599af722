"""Polls every neuron on its own loop: ``/health`` and ``/models``, ``/discovery`` when needed.

Each node has its own task, so a slow node never delays another, and each call has a short
bound. A node is down after three failed polls in a row and up again on the first success.
Requests never wait on the poller: they read what it last stored on the :class:`Node`.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from cortex_core.errors import CortexError
from cortex_core.wire.control import Discovery, Health, ModelInfo
from cortex_gateway.fleet.node import Node
from cortex_gateway.metrics import Metrics
from cortex_gateway.upstream import Upstream

__all__ = ["Poller", "poll_timeout"]

logger = logging.getLogger(__name__)


def poll_timeout(interval: float) -> float:
    """The bound on one poll call: twice the interval, within 0.5 s to 5 s."""
    return min(5.0, max(0.5, 2 * interval))


class Poller:
    """Keeps each :class:`Node` up to date from its neuron."""

    def __init__(
        self,
        nodes: Sequence[Node],
        upstream: Upstream,
        metrics: Metrics,
        *,
        interval: float,
        on_poll: Callable[[], None] = lambda: None,
    ) -> None:
        self._nodes = nodes
        self._on_poll = on_poll
        self._upstream = upstream
        self._metrics = metrics
        self._interval = interval
        self._timeout = poll_timeout(interval)

    async def poll_all(self) -> None:
        """Poll every node once, concurrently (at start-up, before requests are served)."""
        await asyncio.gather(*(self.poll(node) for node in self._nodes))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Poll every node every ``interval`` until the block ends.

        The nodes' turns are spread evenly over the interval: polled all at once, a hundred
        nodes' answers held the event loop for a burst that requests arriving then waited out.
        """
        count = len(self._nodes)
        tasks = [
            asyncio.create_task(self._loop(node, self._interval * i / count))
            for i, node in enumerate(self._nodes)
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, node: Node, offset: float) -> None:
        await asyncio.sleep(offset)
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.poll(node)
            except Exception:  # a bug must not stop this node's polling for good
                logger.exception("polling %s failed unexpectedly", node.name)

    async def poll(self, node: Node) -> None:
        """Poll ``node`` once and store what it said (or count the failure)."""
        started = time.monotonic()
        peer, timeout = node.peer, self._timeout
        try:
            health = await self._upstream.get(peer, "/health", Health, limit_s=timeout)
            discovery = None
            if node.needs_discovery(health):
                discovery = await self._upstream.get(peer, "/discovery", Discovery, limit_s=timeout)
            models = await self._upstream.get(peer, "/models", list[ModelInfo], limit_s=timeout)
        except CortexError as exc:
            self._failed(node, exc)
            return
        if not node.up:
            logger.info("node %s is up", node.name)
        cycles = node.apply_poll(health, models, discovery, started)
        self._on_poll()
        self._metrics.node_up.labels(node.name).set(1)
        self._metrics.residents(
            node.name, {m for m, r in node.residents.items() if r.status == "loaded"}
        )
        self._metrics.record_cycles(node.name, cycles, node.defrag_due)
        kinds = {d.index: d.kind for d in node.discovery.devices} if node.discovery else {}
        for d in health.devices:
            self._metrics.device(
                node.name,
                d.index,
                kinds.get(d.index, "gpu"),
                d.memory_used_mb,
                d.memory_free_mb,
                d.utilization_pct,
            )

    def _failed(self, node: Node, exc: CortexError) -> None:
        if node.poll_failed():
            logger.warning(
                "node %s is down after %d failed polls: %s",
                node.name,
                node.consecutive_failures,
                exc.message,
            )
            self._metrics.forget_devices(node.name)
            self._metrics.residents(node.name, set())
            self._on_poll()
        elif node.consecutive_failures == 1:
            level = logging.INFO if node.up else logging.WARNING
            logger.log(level, "poll of %s failed: %s", node.name, exc.message)
        self._metrics.node_up.labels(node.name).set(int(node.up))
