"""The engine seam: what the neuron needs from an inference engine, at the OpenAI-serving level.

An engine serves one model. It takes the raw body of an OpenAI chat, completions or Responses
request and answers either a whole JSON response or a stream of SSE events (already framed:
chat and completions end with ``data: [DONE]``; a Responses stream is typed ``event:`` events
with a ``sequence_number``, ending with ``response.completed``), so that the neuron reuses
the engine's own serving layer (chat template, tool and reasoning parsers, logprobs,
structured output, usage) rather than re-implementing it.
``engine.vllm`` implements it with vLLM; ``engine.fake`` is the deterministic stand-in that fast
tests run through the very same routes.

Engines raise :class:`~cortex_core.errors.CortexError` subclasses for bad requests; they never
decide HTTP status codes themselves. Cancelling a call, or closing its stream, is how a request
is aborted inside the engine: there is no separate abort call to forget.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from cortex_core.wire.control import DeviceKind, TokenizeRequest

__all__ = ["Answer", "Engine", "EnginePlan", "EngineStarter", "EngineStats", "Warmer"]

Answer = bytes | AsyncIterator[bytes]
"""A whole JSON response body, or the SSE events of a stream."""


class EnginePlan(msgspec.Struct, kw_only=True, frozen=True):
    """Everything needed to start an engine, resolved by the neuron from a load request.

    ``memory_mb`` is the engine's whole budget across ``devices``; ``engine_args`` has passed the
    allow-list and already holds the ``[harness.vllm]`` defaults under the request's own.
    """

    model_id: str
    path: Path | None
    memory_mb: int
    weights_mb: int
    device_kind: DeviceKind
    device_uuids: tuple[str, ...]
    device_memory_mb: tuple[int, ...]
    tensor_parallel: int = 1
    max_model_len: int | None = None
    quant: str | None = None
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    chat_template: str | None = None
    engine_args: dict[str, Any] = msgspec.field(default_factory=dict)
    allow_download: bool = False


class EngineStats(msgspec.Struct, kw_only=True, frozen=True):
    """What an engine says about itself: whether it still works, and if not, why."""

    alive: bool = True
    error: str | None = None
    unfinished_requests: int = 0


class Engine(Protocol):
    """One loaded model, serving OpenAI requests."""

    load_phases: dict[str, float]
    """Where its load's seconds went, by phase (vLLM's: ``import``, ``engine``, ``serving``)."""

    @property
    def max_model_len(self) -> int:
        """The context length it serves."""
        ...

    @property
    def max_concurrency(self) -> int:
        """How many requests it runs at once; more wait in its queue."""
        ...

    async def chat(self, body: bytes, request_id: str) -> Answer:
        """Answer a ``/v1/chat/completions`` body."""
        ...

    async def completion(self, body: bytes, request_id: str) -> Answer:
        """Answer a ``/v1/completions`` body."""
        ...

    async def responses(self, body: bytes, request_id: str) -> Answer:
        """Answer a ``/v1/responses`` body (never one naming ``previous_response_id``)."""
        ...

    async def tokenize(self, request: TokenizeRequest) -> int:
        """Count the tokens of ``messages`` (with the chat template) or of ``prompt``."""
        ...

    def stats(self) -> EngineStats:
        """Cheap, synchronous: answered from what the engine already knows."""
        ...

    async def shutdown(self) -> None:
        """Stop the engine; when this returns its processes are gone and its memory is free."""
        ...


EngineStarter = Callable[[EnginePlan], Awaitable[Engine]]
"""Starts an engine for a plan (this can take minutes); raises CortexError when it cannot."""


class Warmer(Protocol):
    """What readies an engine starter ahead of its first load, from the neuron's start-up."""

    memory_mb: int
    """The host memory what :meth:`warm` starts may hold (``/discovery``'s ``spare_memory_mb``)."""

    async def warm(self, kind: DeviceKind) -> None:
        """Pay now what no model's load depends on (in the background; it may take seconds)."""
        ...

    async def close(self) -> None:
        """Stop what :meth:`warm` started."""
        ...
