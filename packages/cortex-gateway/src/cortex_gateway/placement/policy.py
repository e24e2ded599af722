"""Where a model can go: pure functions from device memory and a footprint to a decision.

First-fit without eviction: the first node (in cortex.toml's order) with devices that have the
room now. No I/O, no clock and no fleet state: the router builds the snapshot, so the placement
issue can replace :func:`first_fit` with strategies that evict (DESIGN §8) and test them alone.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cortex_core.config import ModelProfile

__all__ = ["Candidate", "DeviceRoom", "Need", "Placement", "first_fit", "fits", "pick_devices"]


@dataclass(frozen=True)
class DeviceRoom:
    """One device's memory: in total, and free now."""

    index: int
    total_mb: int
    free_mb: int


@dataclass(frozen=True)
class Need:
    """What a model needs: its footprint (``None``: unknown, counts as fitting) and devices."""

    memory_mb: int | None = None
    devices: int = 1
    device_total_mb: int = 0

    @classmethod
    def of(cls, profile: ModelProfile | None) -> "Need":
        """The need models.toml states; a model without a profile has an unknown footprint."""
        if profile is None:
            return cls()
        return cls(profile.vram_mb, profile.min_devices, profile.min_device_vram_mb)

    @property
    def mb_per_device(self) -> int | None:
        """The footprint split evenly over the devices (tensor parallelism splits it so)."""
        return None if self.memory_mb is None else math.ceil(self.memory_mb / self.devices)


@dataclass(frozen=True)
class Candidate:
    """A healthy node that knows the model, with its devices' memory."""

    node: str
    rooms: Sequence[DeviceRoom]


@dataclass(frozen=True)
class Placement:
    """Load on ``node``, on ``devices`` (``None``: the neuron chooses)."""

    node: str
    devices: tuple[int, ...] | None


def pick_devices(rooms: Sequence[DeviceRoom], need: Need, *, free: bool) -> tuple[int, ...] | None:
    """The first devices (by index) with room for ``need``, or ``None``.

    With ``free`` the room is the free memory now, else the device's total. An unknown footprint
    fits any device big enough by ``device_total_mb``, and returns ``()``: no choice to impose.
    """
    eligible = sorted(
        (r for r in rooms if r.total_mb >= need.device_total_mb), key=lambda r: r.index
    )
    per_device = need.mb_per_device
    if per_device is None:
        return () if len(eligible) >= need.devices else None
    chosen = [r.index for r in eligible if (r.free_mb if free else r.total_mb) >= per_device]
    return tuple(chosen[: need.devices]) if len(chosen) >= need.devices else None


def fits(rooms: Sequence[DeviceRoom], need: Need) -> bool:
    """Whether the devices could hold ``need`` at all (when empty): DESIGN §4 "servable"."""
    return pick_devices(rooms, need, free=False) is not None


def first_fit(candidates: Sequence[Candidate], need: Need) -> Placement | None:
    """The first candidate with room for ``need`` now, or ``None`` when none has."""
    for candidate in candidates:
        devices = pick_devices(candidate.rooms, need, free=True)
        if devices is not None:
            return Placement(candidate.node, devices or None)
    return None
