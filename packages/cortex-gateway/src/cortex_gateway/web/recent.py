"""What the status page shows of the recent past: the last requests and lifecycle events.

Both buffers are bounded (a :class:`collections.deque` with ``maxlen``): the oldest entry goes
when a new one comes. A request is kept as its accounting only (model, node, dialect, status,
timings, token count), never its prompt or its answer. This module imports nothing of the
gateway, so that the exchange and the lifecycle can record into it without a cycle.
"""

import time
from collections import deque
from typing import Literal

import msgspec

__all__ = ["EVENTS_KEPT", "REQUESTS_KEPT", "LifecycleEvent", "Recent", "RequestRecord"]

REQUESTS_KEPT = 100
EVENTS_KEPT = 100


class RequestRecord(msgspec.Struct, kw_only=True, frozen=True):
    """One finished inference request; ``-`` for a model or node it never reached."""

    at: float
    """When it finished (Unix seconds)."""
    model: str
    node: str
    dialect: str
    status: int
    seconds: float
    ttft_s: float | None = None
    completion_tokens: int | None = None
    tokens_per_second: float | None = None


class LifecycleEvent(msgspec.Struct, kw_only=True, frozen=True):
    """A load (with its seconds, or its error) or an unload (with its reason)."""

    at: float
    kind: Literal["load", "load_failed", "unload"]
    model: str
    node: str
    seconds: float | None = None
    reason: str | None = None


class Recent:
    """The last ``requests`` requests and ``events`` lifecycle events, newest last."""

    def __init__(self, *, requests: int = REQUESTS_KEPT, events: int = EVENTS_KEPT) -> None:
        self.requests: deque[RequestRecord] = deque(maxlen=requests)
        self.events: deque[LifecycleEvent] = deque(maxlen=events)

    def request(self, record: RequestRecord) -> None:
        """Keep a finished request."""
        self.requests.append(record)

    def loaded(self, model: str, node: str, seconds: float) -> None:
        """Keep a load that took ``seconds``."""
        self.events.append(
            LifecycleEvent(at=time.time(), kind="load", model=model, node=node, seconds=seconds)
        )

    def load_failed(self, model: str, node: str, seconds: float, reason: str) -> None:
        """Keep a load that failed after ``seconds``, and why."""
        self.events.append(
            LifecycleEvent(
                at=time.time(),
                kind="load_failed",
                model=model,
                node=node,
                seconds=seconds,
                reason=reason,
            )
        )

    def unloaded(self, model: str, node: str, reason: str) -> None:
        """Keep an unload: an eviction (``lru``, ``idle``…) or an operator's (``admin``)."""
        self.events.append(
            LifecycleEvent(at=time.time(), kind="unload", model=model, node=node, reason=reason)
        )
