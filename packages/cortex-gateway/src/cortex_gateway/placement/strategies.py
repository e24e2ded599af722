"""Which idle models make room first (``[eviction] strategy``), as orderings over the snapshot.

- ``lru``: the least recently used first (by the end of its last request).
- ``priority``: the lowest models.toml ``priority`` first, then the least recently used.
- ``cost``: cost-aware, in the spirit of GreedyDual-Size: what a model is worth keeping is the
  seconds a reload would cost (measured at its last load, else estimated from its size),
  discounted by how long it has been idle, per MiB it holds. The cheapest to lose per MiB goes
  first, and a node's eviction costs the sum of what its victims are worth.

Each strategy gives a key that orders the victims on a device (least valuable first) and a
cost that compares the victim sets of different nodes (lower is better). Pure: time is passed in.
"""

from collections.abc import Sequence
from typing import Literal

from cortex_gateway.placement.snapshot import ModelState

__all__ = ["Strategy", "reload_seconds", "victim_key", "victims_cost"]

Strategy = Literal["lru", "priority", "cost"]

ESTIMATED_MB_PER_S = 1000.0
"""A model never loaded through this gateway reloads at this rate (a guess; measured ones win)."""

IDLE_SCALE_S = 60.0
"""In the cost strategy, a model idle this long is worth half as much as one just used."""

_NEVER = float("-inf")


def reload_seconds(state: ModelState) -> float:
    """The seconds loading ``state`` again would cost: measured, else estimated from its size."""
    if state.load_seconds is not None:
        return state.load_seconds
    return (state.memory_mb or 0) / ESTIMATED_MB_PER_S


def _worth(state: ModelState, now: float) -> float:
    idle = now - state.last_used if state.last_used is not None else 10 * 86400.0
    return reload_seconds(state) * IDLE_SCALE_S / (max(idle, 0.0) + IDLE_SCALE_S)


def _used(state: ModelState) -> float:
    return state.last_used if state.last_used is not None else _NEVER


def victim_key(state: ModelState, strategy: Strategy, now: float) -> tuple[float, ...]:
    """Orders victims on one device: the one to unload first sorts first."""
    if strategy == "priority":
        return (state.priority, _used(state))
    if strategy == "cost":
        return (_worth(state, now) / max(state.memory_mb or 1, 1), _used(state))
    return (_used(state),)


def victims_cost(
    victims: Sequence[ModelState], strategy: Strategy, now: float
) -> tuple[float, ...]:
    """What unloading ``victims`` costs, to compare nodes (no victims costs least)."""
    if not victims:
        return (_NEVER, 0.0)
    count = float(len(victims))
    if strategy == "priority":
        return (max(v.priority for v in victims), max(_used(v) for v in victims), count)
    if strategy == "cost":
        return (sum(_worth(v, now) for v in victims), count)
    return (max(_used(v) for v in victims), count)
