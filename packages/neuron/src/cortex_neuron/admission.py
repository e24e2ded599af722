"""Admission: how many requests a loaded model takes, and the ticket each admitted one holds.

A model runs ``concurrency`` requests at once (the engine's batch size); up to
``max_queued_per_model`` more wait in the engine's queue; beyond that a request is refused with
429 and ``Retry-After``. A request holds a :class:`Ticket` from admission until its response has
ended, however it ends (finished, failed, cancelled, client gone), so the counts stay true. A
ticket can be aborted (a forced unload, a crashed engine): the request's response then ends with
that error.
"""

import asyncio
from collections.abc import Callable

from cortex_core.errors import CortexError, RateLimitError

__all__ = ["Gate", "Ticket"]


class Ticket:
    """One admitted request."""

    def __init__(self, gate: "Gate") -> None:
        self.aborted = asyncio.Event()
        self.abort_error: CortexError | None = None
        self._gate = gate
        self._released = False

    def abort(self, error: CortexError) -> None:
        """End this request with ``error``."""
        self.abort_error = error
        self.aborted.set()

    def release(self) -> None:
        """The request's response has ended; idempotent."""
        if not self._released:
            self._released = True
            self._gate._release(self)


class Gate:
    """Admission to one loaded model."""

    def __init__(self, concurrency: int, max_queued: int, on_release: Callable[[], None]) -> None:
        self.concurrency = concurrency
        self.max_queued = max_queued
        self.tickets: dict[int, Ticket] = {}
        self._closed: CortexError | None = None
        self._on_release = on_release
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def active(self) -> int:
        """Requests admitted and not yet ended."""
        return len(self.tickets)

    @property
    def in_flight(self) -> int:
        """Requests the engine is running."""
        return min(self.active, self.concurrency)

    @property
    def queued(self) -> int:
        """Requests waiting in the engine's queue."""
        return self.active - self.in_flight

    def admit(self) -> Ticket:
        """A ticket for one more request.

        Raises:
            CortexError: the gate is closed (the error it was closed with).
            RateLimitError: the queue is full.
        """
        if self._closed is not None:
            raise self._closed
        if self.active >= self.concurrency + self.max_queued:
            raise RateLimitError(
                f"{self.active} requests are running or waiting for this model; retry later",
                retry_after=1,
            )
        ticket = Ticket(self)
        self.tickets[id(ticket)] = ticket
        self._idle.clear()
        return ticket

    def close(self, error: CortexError) -> None:
        """Admit no more requests; new ones get ``error``."""
        self._closed = error

    def abort_all(self, error: CortexError) -> None:
        """End every admitted request with ``error``."""
        for ticket in list(self.tickets.values()):
            ticket.abort(error)

    async def wait_idle(self, seconds: float) -> bool:
        """Wait until no request is admitted, at most ``seconds``; whether it is idle."""
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def _release(self, ticket: Ticket) -> None:
        del self.tickets[id(ticket)]
        if not self.tickets:
            self._idle.set()
        self._on_release()
