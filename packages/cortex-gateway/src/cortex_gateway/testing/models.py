"""The fake neuron's models: each one's lifecycle state and the requests it has admitted.

The states and fields of DESIGN §3's ``GET /models`` (available → loading → loaded → unloading
→ available; loading → failed), and admission as the real neuron's: ``concurrency`` requests
run, ``max_queued`` more wait, beyond that 429 with ``Retry-After``; an admitted request can be
aborted (a forced unload, a dead engine, a drain). Tests and benchmarks only.
"""

import asyncio
from dataclasses import dataclass, field

from cortex_core.errors import CortexError, RateLimitError
from cortex_core.wire.control import ModelInfo, ModelStatus

__all__ = ["Admitted", "FakeModel"]


class Admitted:
    """One admitted request: set :attr:`aborted` to end it with :attr:`error`."""

    def __init__(self) -> None:
        self.aborted = asyncio.Event()
        self.error: CortexError | None = None

    def abort(self, error: CortexError) -> None:
        """End this request with ``error``."""
        self.error = error
        self.aborted.set()


@dataclass
class FakeModel:
    """A model the fake neuron knows.

    ``memory_mb`` is what it holds on its devices while it is loading, loaded or unloading
    (for a model that starts loaded: its footprint), else None.
    """

    id: str
    status: ModelStatus = "available"
    memory_mb: int | None = None
    max_model_len: int = 4096
    devices: list[int] = field(default_factory=list)
    loaded_at: float | None = None
    last_used: float | None = None
    error: str | None = None
    admitted: set[Admitted] = field(default_factory=set)
    closed: CortexError | None = None
    """Set while it admits no more requests (unloading, draining): the error they get."""
    task: "asyncio.Task[None] | None" = None
    """The load or unload under way."""

    @property
    def active(self) -> int:
        """Requests admitted and not yet ended."""
        return len(self.admitted)

    def info(self) -> ModelInfo:
        """``GET /models``'s entry."""
        return ModelInfo(
            id=self.id,
            status=self.status,
            devices=list(self.devices),
            memory_mb=self.memory_mb,
            max_model_len=self.max_model_len if self.status in ("loaded", "unloading") else None,
            loaded_at=self.loaded_at,
            last_used=self.last_used,
            in_flight=self.active,
            error=self.error,
        )

    def admit(self, concurrency: int, max_queued: int) -> Admitted:
        """Admit one more request.

        Raises:
            CortexError: the model admits no more (the error it was closed with).
            RateLimitError: ``concurrency + max_queued`` requests are already admitted.
        """
        if self.closed is not None:
            raise self.closed
        if self.active >= concurrency + max_queued:
            raise RateLimitError(
                f"{self.active} requests are running or waiting for this model; retry later",
                retry_after=1,
            )
        admitted = Admitted()
        self.admitted.add(admitted)
        return admitted

    def abort_all(self, error: CortexError) -> None:
        """End every admitted request with ``error``."""
        for admitted in list(self.admitted):
            admitted.abort(error)

    async def wait_idle(self, seconds: float) -> bool:
        """Wait until no request is admitted, at most ``seconds``; whether it is idle."""
        try:
            async with asyncio.timeout(seconds):
                while self.admitted:  # noqa: ASYNC110 - requests end in other tasks
                    await asyncio.sleep(0.005)
        except TimeoutError:
            return False
        return True
