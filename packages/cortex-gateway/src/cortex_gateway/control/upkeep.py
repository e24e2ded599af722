"""What the gateway does on its own, every few seconds: pins, idle unloads, drained nodes.

- A model pinned on a node (models.toml ``pinned_on``) is loaded there when the gateway starts
  and whenever it is found missing, through placement like any load (it may evict idle models);
  not on a node that is cordoned, down or shutting down.
- ``[eviction] idle_ttl_s``: a model idle that long (from the end of its last request, or its
  load when it never served one) is unloaded; pinned models are exempt; ``0`` = never.
- A drained node's models are unloaded as they go idle (pins included: the operator is taking
  the node out).

Idle means what placement means: nothing in flight or queued at the neuron, nothing this
gateway has sent or holds in its queue. A gateway with ``[eviction] lifecycle = false`` does
none of this.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

from cortex_core.config import ModelsConfig
from cortex_core.errors import CortexError
from cortex_gateway.control.lifecycle import Lifecycle
from cortex_gateway.control.queue import Queue
from cortex_gateway.control.routing import Router
from cortex_gateway.fleet.node import Node, Resident

__all__ = ["Upkeep"]

logger = logging.getLogger(__name__)


class Upkeep:
    """Keeps pins loaded and unloads what has been idle too long or sits on a drained node."""

    def __init__(
        self,
        nodes: Sequence[Node],
        models: ModelsConfig,
        router: Router,
        lifecycle: Lifecycle,
        queue: Queue,
        *,
        idle_ttl_s: float,
        interval_s: float,
    ) -> None:
        self._nodes = nodes
        self._pins = [(p.id, node) for p in models.models for node in p.pinned_on]
        self._pinned = set(self._pins)
        self._router = router
        self._lifecycle = lifecycle
        self._queue = queue
        self._idle_ttl_s = idle_ttl_s
        self._interval_s = interval_s
        self._busy: set[tuple[str, str]] = set()
        """(node, model) pairs upkeep is loading or unloading now."""

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Look after the fleet every ``interval_s`` until the block ends."""
        if not self._router.may_load:
            yield
            return
        task = asyncio.create_task(self._loop())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.tend()
            except Exception:  # a bug must not stop upkeep for good
                logger.exception("fleet upkeep failed unexpectedly")
            await asyncio.sleep(self._interval_s)

    async def tend(self) -> None:
        """One round: start the loads and unloads that are due (they run in the background)."""
        now = time.time()
        by_name = {n.name: n for n in self._nodes}
        for model, name in self._pins:
            node = by_name.get(name)
            if node is None or not node.healthy or node.cordoned or (name, model) in self._busy:
                continue
            if node.status(model) in ("available", "failed"):
                self._start(name, model, self._pin(model, name))
        waiting = self._queue.waiting()
        for node in self._nodes:
            if not node.healthy:
                continue
            for model, resident in list(node.residents.items()):
                busy = (node.name, model) in self._busy or waiting.get(model, 0) > 0
                if busy or not _idle(resident):
                    continue
                if node.drained:
                    self._start(node.name, model, self._unload(node, model, "drain"))
                elif self._idle_ttl_s and (model, node.name) not in self._pinned:
                    since = _idle_since(resident)
                    if since is not None and now - since >= self._idle_ttl_s:
                        self._start(node.name, model, self._unload(node, model, "idle_ttl"))

    def _start(self, node: str, model: str, work: Coroutine[Any, Any, None]) -> None:
        key = (node, model)
        self._busy.add(key)
        task = asyncio.ensure_future(work)
        task.add_done_callback(lambda _: self._busy.discard(key))

    async def _pin(self, model: str, node: str) -> None:
        logger.info("pinned model %s is not loaded on %s: loading it", model, node)
        try:
            await self._router.load(model, node, force=False)
        except CortexError as exc:
            logger.warning("could not load pinned %s on %s: %s", model, node, exc.message)

    async def _unload(self, node: Node, model: str, reason: str) -> None:
        try:
            await self._lifecycle.unload(node, model, force=False, reason=reason)
        except CortexError as exc:  # busy again (409), or gone: the next round looks again
            logger.info("did not unload %s from %s (%s): %s", model, node.name, reason, exc.message)
        finally:
            self._queue.changed()


def _idle(resident: Resident) -> bool:
    info = resident.info
    return (
        info is not None
        and info.status == "loaded"
        and not resident.unloading
        and resident.active == 0
        and info.in_flight == 0
        and resident.queued == 0
    )


def _idle_since(resident: Resident) -> float | None:
    info = resident.info
    assert info is not None
    return resident.last_used if resident.last_used is not None else info.loaded_at
