"""The gateway's per-model queue: requests waiting for their model to load or for room.

A request that cannot be sent to a loaded replica at once waits here, bounded per model in
count (``[gateway] queue_per_model``: one more is 429 with ``Retry-After``) and, while it waits
for room, in time (``queue_timeout_s``: then 503 with ``Retry-After``). Waiters are woken
whenever the fleet changes (a request ends, a load or an unload ends, a poll lands) and ask
placement again. The queue also says which models have been passed over too long
(``[eviction] max_pass_over_s``), so that placement makes the models in their way yield
(DESIGN §8): two models that cannot share a node alternate in batches, and neither starves.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from cortex_core.errors import RateLimitError, ServiceUnavailableError
from cortex_gateway.metrics import Metrics

__all__ = ["Queue"]


class Queue:
    """Who waits for which model, since when; and a signal that the fleet has changed."""

    def __init__(
        self, metrics: Metrics, *, per_model: int, timeout_s: float, pass_over_s: float
    ) -> None:
        self._metrics = metrics
        self._per_model = per_model
        self._timeout_s = timeout_s
        self._pass_over_s = pass_over_s
        self._since: dict[str, list[float]] = {}
        self._changed = asyncio.Event()

    def waiting(self) -> dict[str, int]:
        """How many requests wait for each model."""
        return {model: len(since) for model, since in self._since.items()}

    def passed_over(self) -> list[str]:
        """The models whose oldest waiter has waited longer than ``max_pass_over_s``."""
        now = time.monotonic()
        return [m for m, since in self._since.items() if now - since[0] > self._pass_over_s]

    @asynccontextmanager
    async def entry(self, model: str) -> AsyncIterator["Entry"]:
        """A place in ``model``'s queue for as long as the block runs.

        Raises:
            RateLimitError: ``queue_per_model`` requests already wait for it.
        """
        since = self._since.setdefault(model, [])
        if len(since) >= self._per_model:
            raise RateLimitError(
                f"{len(since)} requests already wait for {model}, the most this gateway queues",
                retry_after=self._timeout_s / 10,
            )
        entered = time.monotonic()
        since.append(entered)
        self._metrics.queue_depth.labels(model).set(len(since))
        try:
            yield Entry(model, self._timeout_s, self._next_change)
        finally:
            since.remove(entered)
            if not since:
                del self._since[model]
            self._metrics.queue_depth.labels(model).set(len(since))
            self._metrics.queue_wait.observe(time.monotonic() - entered)
            self.changed()

    def changed(self) -> None:
        """Wake every waiter: the fleet has changed, placement may decide otherwise now."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _next_change(self, limit_s: float) -> None:
        # On a timeout, decide again anyway: a poll may have landed without a signal.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), limit_s)


class Entry:
    """One request's place in its model's queue."""

    RECHECK_S = 1.0
    """A waiter asks again at least this often, signal or not."""

    def __init__(
        self, model: str, timeout_s: float, next_change: Callable[[float], Awaitable[None]]
    ) -> None:
        self._model = model
        self._timeout_s = timeout_s
        self._next_change = next_change
        self._waited = 0.0

    async def wait(self, why: str) -> None:
        """Wait for the fleet to change; ``why`` placement refused, for the timeout's message.

        Raises:
            ServiceUnavailableError: it has waited for room ``queue_timeout_s`` in all.
        """
        left = self._timeout_s - self._waited
        if left <= 0:
            raise ServiceUnavailableError(
                f"{self._model} waited {self._timeout_s:g} s for room: {why}",
                retry_after=min(60.0, self._timeout_s),
            )
        started = time.monotonic()
        await self._next_change(min(left, self.RECHECK_S))
        self._waited += time.monotonic() - started
