"""What the gateway knows of each neuron: the state the poller builds and the router reads.

The neuron is the source of truth (DESIGN §7.8): everything here is rebuilt from polls, plus the
gateway's own live facts that a poll cannot know yet (its requests in flight, the memory its
loads under way will take, a load or unload it has just finished). It never calls a neuron.
"""

import logging
import time
from dataclasses import dataclass, field

from cortex_core.config import NeuronPeer
from cortex_core.wire.control import Discovery, Health, ModelInfo, ModelStatus
from cortex_gateway.placement.policy import DeviceRoom

__all__ = ["Node", "Reservation"]

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Reservation:
    """Memory a load of this gateway takes on a node before a poll can show it."""

    devices: tuple[int, ...]
    mb_per_device: int
    done_at: float | None = None
    """When the load ended (monotonic); the first poll started after it shows the memory."""


@dataclass(eq=False)
class Node:
    """One ``[[neurons]]`` peer and its last known state."""

    peer: NeuronPeer
    defrag_after: int = 0
    """Warn once the node has had this many load/unload cycles since it started (0: never)."""
    up: bool = False
    consecutive_failures: int = 0
    last_poll: float | None = None
    """Wall-clock time of the last successful poll."""
    discovery: Discovery | None = None
    health: Health | None = None
    models: dict[str, ModelInfo] = field(default_factory=dict)
    endpoints: dict[str, str] = field(default_factory=dict)
    """Where each loaded model's inference is served, resolved once per load."""
    active: dict[str, int] = field(default_factory=dict)
    """This gateway's requests in flight on this node, per model."""
    cycles: int = 0
    """Models seen unloaded after being loaded, since the neuron started."""
    reservations: list[Reservation] = field(default_factory=list)
    _changed: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The node's name from cortex.toml."""
        return self.peer.name

    @property
    def draining(self) -> bool:
        """Whether the neuron said it is shutting down."""
        return self.health is not None and self.health.draining

    @property
    def healthy(self) -> bool:
        """Up and not draining: requests and loads may go here."""
        return self.up and not self.draining

    @property
    def defrag_due(self) -> bool:
        """Whether the node has had ``defrag_after`` cycles since its neuron started."""
        return 0 < self.defrag_after <= self.cycles

    def status(self, model_id: str) -> ModelStatus | None:
        """The model's state here, ``None`` when the neuron does not know it."""
        info = self.models.get(model_id)
        return None if info is None else info.status

    def rooms(self) -> list[DeviceRoom]:
        """Each device's total and free memory, less what this gateway's loads will take."""
        if self.health is None:
            return []
        taken: dict[int, int] = {}
        for reservation in self.reservations:
            for index in reservation.devices:
                taken[index] = taken.get(index, 0) + reservation.mb_per_device
        return [
            DeviceRoom(
                index=d.index,
                total_mb=d.memory_used_mb + d.memory_free_mb,
                free_mb=d.memory_free_mb - taken.get(d.index, 0),
            )
            for d in self.health.devices
        ]

    def set_model(self, info: ModelInfo, endpoint: str | None = None) -> int:
        """Record a change this gateway made (a load, an unload, a re-route) ahead of polls.

        Returns the number of load/unload cycles it completes (0 or 1).
        """
        previous = self.status(info.id)
        self.models[info.id] = info
        self._changed[info.id] = time.monotonic()
        if endpoint is not None:
            self.endpoints[info.id] = endpoint
        elif info.status != "loaded":
            self.endpoints.pop(info.id, None)
        return self._add_cycles(int(previous == "loaded" and info.status != "loaded"))

    def apply_poll(
        self, health: Health, models: list[ModelInfo], discovery: Discovery | None, started: float
    ) -> int:
        """Take a successful poll that began at ``started`` (monotonic).

        Returns the number of load/unload cycles it revealed. A change this gateway made after
        the poll began is kept: the poll could not have seen it yet.
        """
        restarted = self.health is not None and health.uptime_secs < self.health.uptime_secs
        if restarted or not self.up:
            self.endpoints.clear()
        if restarted:
            logger.info("node %s restarted", self.name)
            self.cycles = 0
        if discovery is not None:
            self.discovery = discovery
        self.health = health
        self.up = True
        self.consecutive_failures = 0
        self.last_poll = time.time()
        self.reservations = [
            r for r in self.reservations if r.done_at is None or r.done_at >= started
        ]
        fresh = {m.id: m for m in models}
        for model_id, changed in list(self._changed.items()):
            if changed >= started and model_id in self.models:
                fresh[model_id] = self.models[model_id]
            else:
                del self._changed[model_id]
        cycles = 0
        if not restarted:
            for model_id, info in self.models.items():
                now = fresh.get(model_id)
                gone = now is None or now.status not in ("loaded", "unloading")
                cycles += info.status == "loaded" and model_id not in self._changed and gone
        self._add_cycles(cycles)
        for model_id, info in fresh.items():
            if info.status != "loaded":
                self.endpoints.pop(model_id, None)
        for model_id in self.endpoints.keys() - fresh.keys():
            del self.endpoints[model_id]
        self.models = fresh
        return cycles

    def _add_cycles(self, cycles: int) -> int:
        due = self.defrag_due
        self.cycles += cycles
        if self.defrag_due and not due:
            logger.warning(
                "node %s has had %d load/unload cycles since its neuron started: device memory "
                "may be fragmented; restart the neuron when it is idle",
                self.name,
                self.cycles,
            )
        return cycles

    def needs_discovery(self, health: Health) -> bool:
        """Whether to ask ``/discovery``: on first contact, after being down, after a restart."""
        return (
            self.discovery is None
            or not self.up
            or (self.health is not None and health.uptime_secs < self.health.uptime_secs)
        )

    def poll_failed(self) -> bool:
        """Count a failed poll; returns True when this one marks the node down (the third)."""
        self.consecutive_failures += 1
        if self.up and self.consecutive_failures >= 3:
            self.up = False
            self.discovery = None
            return True
        return False
