"""The fleet as placement sees it: one typed, immutable snapshot, built fresh for each decision.

Everything DESIGN §8 decides from is here: per node its health, cordon and drain state and its
devices' memory (total, and free less what loads under way claim); per model on a node its
footprint, state, last use, requests in flight and queued, pin, priority and the seconds its
last load took; and the loads under way with the memory they claim. Built by the fleet
(:meth:`cortex_gateway.fleet.node.Node.state`), read by :func:`~.policy.decide`; nothing in it
changes after it is made, so a decision can never read half of one fleet and half of another.
"""

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from cortex_core.config import ModelProfile
from cortex_core.wire.control import ModelStatus

__all__ = ["DeviceRoom", "FleetSnapshot", "LoadClaim", "ModelState", "Need", "NodeState"]


@dataclass(frozen=True)
class DeviceRoom:
    """One device's memory: in total, and free now (less what loads under way claim)."""

    index: int
    total_mb: int
    free_mb: int


@dataclass(frozen=True)
class LoadClaim:
    """Memory a load under way will take on a node before a poll can show it."""

    devices: tuple[int, ...]
    mb_per_device: int


@dataclass(frozen=True)
class ModelState:
    """One model on one node."""

    model: str
    status: ModelStatus
    memory_mb: int | None = None
    devices: tuple[int, ...] = ()
    """The device indices it holds memory on."""
    last_used: float | None = None
    """When its last request ended (wall clock)."""
    active: int = 0
    """This gateway's requests on it, counted from the moment each was forwarded."""
    in_flight: int = 0
    """Requests the neuron said it runs (as of the last poll)."""
    queued: int = 0
    pinned: bool = False
    priority: int = 100
    load_seconds: float | None = None
    """How long its last load through this gateway took."""
    loading: bool = False
    """This gateway's load of it is under way."""
    waiting: int = 0
    """Requests waiting in this gateway's queue for it (loading, or waiting for room)."""
    yielding: bool = False
    """Another model's queue has been passed over too long for this one's room: new requests
    wait instead of being sent here, so that it goes idle and makes room."""


@dataclass(frozen=True)
class NodeState:
    """One node: whether it takes work, its devices, what it holds."""

    name: str
    up: bool
    draining: bool = False
    cordoned: bool = False
    devices: tuple[DeviceRoom, ...] = ()
    models: Mapping[str, ModelState] = field(default_factory=dict)
    claims: tuple[LoadClaim, ...] = ()

    @property
    def healthy(self) -> bool:
        """Up and not draining: requests may go here."""
        return self.up and not self.draining


@dataclass(frozen=True)
class FleetSnapshot:
    """Every node, in cortex.toml's order, as of ``now`` (wall clock)."""

    nodes: tuple[NodeState, ...]
    now: float

    def yielding(self, pairs: set[tuple[str, str]]) -> "FleetSnapshot":
        """This snapshot with the models of ``pairs`` (node, model) yielding their room."""
        return FleetSnapshot(
            nodes=tuple(
                dataclasses.replace(
                    n,
                    models={
                        m: dataclasses.replace(s, yielding=True) if (n.name, m) in pairs else s
                        for m, s in n.models.items()
                    },
                )
                for n in self.nodes
            ),
            now=self.now,
        )


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
