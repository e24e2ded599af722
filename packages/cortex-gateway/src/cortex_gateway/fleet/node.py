"""What the gateway knows of each neuron: the state the poller builds and placement reads.

The neuron is the source of truth (DESIGN §7.8): everything here is rebuilt from polls, plus the
gateway's own live facts that a poll cannot know yet (its requests in flight, the memory its
loads under way will take, a load or unload it has just finished). Each model a node knows has
one :class:`Resident` record holding both. It never calls a neuron.
"""

import logging
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from cortex_core.config import ModelProfile, NeuronPeer
from cortex_core.wire.control import Discovery, Health, ModelInfo, ModelStatus
from cortex_gateway.placement.snapshot import DeviceRoom, LoadClaim, ModelState, NodeState

__all__ = ["Node", "Reservation", "Resident"]

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Reservation:
    """Memory a load of this gateway takes on a node before a poll can show it."""

    devices: tuple[int, ...]
    mb_per_device: int
    done_at: float | None = None
    """When the load ended (monotonic); the first poll started after it shows the memory."""
    model: str | None = None
    """The model loading; a poll that shows it loading or loaded shows its memory too."""


@dataclass(eq=False)
class Resident:
    """One model on one node: the neuron's last word on it, and this gateway's own facts."""

    info: ModelInfo | None = None
    """What the neuron last said (``None``: it does not know the model, or not yet)."""
    endpoint: str | None = None
    """Where its inference is served, resolved once per load."""
    active: int = 0
    """This gateway's requests in flight on it, counted from the moment one is forwarded."""
    queued: int = 0
    """Requests waiting in the neuron's queue beyond its engine's batch, from ``/health``."""
    last_active: float | None = None
    """Wall-clock time this gateway's last request on it ended."""
    load_seconds: float | None = None
    """How long its last load through this gateway took."""
    footprint_mb: int | None = None
    """The memory it took when last loaded here (what placement plans with, once known)."""
    changed: float | None = None
    """When this gateway last changed its state ahead of polls (monotonic)."""
    unloading: bool = False
    """This gateway is unloading it: placement sees it ``unloading`` until the neuron answers."""

    @property
    def status(self) -> ModelStatus | None:
        """Its state on the node, ``None`` when the neuron does not know it."""
        return None if self.info is None else self.info.status

    @property
    def last_used(self) -> float | None:
        """When its last request ended, by the neuron's clock or this gateway's, the later."""
        neuron = self.info.last_used if self.info is not None else None
        if neuron is None or self.last_active is None:
            return neuron if neuron is not None else self.last_active
        return max(neuron, self.last_active)


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
    residents: dict[str, Resident] = field(default_factory=dict)
    """One record per model the node knows (or that this gateway still has requests on)."""
    cycles: int = 0
    """Models seen unloaded after being loaded, since the neuron started."""
    cordoned: bool = False
    """Takes no new loads (its resident models keep serving): an operator's cordon or drain."""
    drained: bool = False
    """An operator's drain: cordoned, and its models are unloaded as they go idle."""
    reservations: list[Reservation] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The node's name from cortex.toml."""
        return self.peer.name

    @property
    def shutting_down(self) -> bool:
        """Whether the neuron said it is shutting down."""
        return self.health is not None and self.health.draining

    @property
    def draining(self) -> bool:
        """Whether the node is on its way out: an operator's drain, or the neuron shutting down."""
        return self.drained or self.shutting_down

    @property
    def healthy(self) -> bool:
        """Up and not shutting down: requests may go here (loads only when not cordoned)."""
        return self.up and not self.shutting_down

    @property
    def defrag_due(self) -> bool:
        """Whether the node has had ``defrag_after`` cycles since its neuron started."""
        return 0 < self.defrag_after <= self.cycles

    def status(self, model_id: str) -> ModelStatus | None:
        """The model's state here, ``None`` when the neuron does not know it."""
        resident = self.residents.get(model_id)
        return None if resident is None else resident.status

    def info(self, model_id: str) -> ModelInfo | None:
        """What the neuron last said of the model."""
        resident = self.residents.get(model_id)
        return None if resident is None else resident.info

    def resident(self, model_id: str) -> Resident:
        """The model's record here, made empty when there is none yet."""
        resident = self.residents.get(model_id)
        if resident is None:
            resident = self.residents[model_id] = Resident()
        return resident

    @property
    def endpoints(self) -> dict[str, str]:
        """Where each loaded model's inference is served, as resolved (a copy)."""
        return {m: r.endpoint for m, r in self.residents.items() if r.endpoint is not None}

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

    def state(
        self,
        profiles: Mapping[str, ModelProfile],
        loading: Collection[str],
        waiting: Mapping[str, int],
        only: str | None = None,
    ) -> NodeState:
        """This node as placement sees it.

        ``loading``: this gateway's loads under way here; ``waiting``: its queue, per model;
        ``only``: that model's state alone, and no devices (all a decision to send it to a
        loaded replica reads).
        """
        models = {}
        residents: Iterable[tuple[str, Resident]] = self.residents.items()
        if only is not None:
            residents = [(only, r)] if (r := self.residents.get(only)) is not None else []
        for model_id, resident in residents:
            info = resident.info
            if info is None:
                continue
            profile = profiles.get(model_id)
            models[model_id] = ModelState(
                model=model_id,
                status="unloading" if resident.unloading else info.status,
                memory_mb=info.memory_mb or resident.footprint_mb,
                devices=tuple(info.devices),
                last_used=resident.last_used,
                active=resident.active,
                in_flight=info.in_flight,
                queued=resident.queued,
                pinned=profile is not None and self.name in profile.pinned_on,
                priority=profile.priority if profile is not None else 100,
                load_seconds=resident.load_seconds,
                loading=model_id in loading,
                waiting=waiting.get(model_id, 0),
            )
        return NodeState(
            name=self.name,
            up=self.up,
            draining=self.shutting_down,
            cordoned=self.cordoned,
            devices=tuple(self.rooms()) if only is None else (),
            models=models,
            claims=tuple(
                LoadClaim(r.devices, r.mb_per_device)
                for r in self.reservations
                if r.done_at is None and only is None
            ),
        )

    def set_model(self, info: ModelInfo, endpoint: str | None = None) -> int:
        """Record a change this gateway made (a load, an unload, a re-route) ahead of polls.

        Returns the number of load/unload cycles it completes (0 or 1).
        """
        resident = self.resident(info.id)
        previous = resident.status
        resident.info = info
        if info.status == "loaded" and info.memory_mb:
            resident.footprint_mb = info.memory_mb
        resident.changed = time.monotonic()
        if endpoint is not None:
            resident.endpoint = endpoint
        elif info.status != "loaded":
            resident.endpoint = None
        return self._add_cycles(int(previous == "loaded" and info.status != "loaded"))

    def apply_poll(
        self, health: Health, models: list[ModelInfo], discovery: Discovery | None, started: float
    ) -> int:
        """Take a successful poll that began at ``started`` (monotonic).

        Returns the number of load/unload cycles it revealed. A change this gateway made after
        the poll began is kept: the poll could not have seen it yet.
        """
        restarted = self.health is not None and health.uptime_secs < self.health.uptime_secs
        if restarted:
            logger.info("node %s restarted", self.name)
            self.cycles = 0
        forget_endpoints = restarted or not self.up
        if discovery is not None:
            self.discovery = discovery
        self.health = health
        self.up = True
        self.consecutive_failures = 0
        self.last_poll = time.time()
        fresh = {m.id: m for m in models}
        self.reservations = [
            r
            for r in self.reservations
            if (r.done_at is None or r.done_at >= started)
            and not (r.model in fresh and fresh[r.model].status in ("loading", "loaded"))
        ]
        queued = {m.id: m.queued for m in health.models}
        cycles = 0
        residents, self.residents = self.residents, {}
        for model_id in [*fresh, *(m for m in residents if m not in fresh)]:  # the neuron's order
            resident = self.residents[model_id] = residents.get(model_id) or Resident()
            if forget_endpoints:
                resident.endpoint = None
            resident.queued = queued.get(model_id, 0)
            if resident.changed is not None and resident.changed >= started:
                continue  # this gateway changed it after the poll began: the poll is older
            resident.changed = None
            now = fresh.get(model_id)
            gone = now is None or now.status not in ("loaded", "unloading")
            cycles += not restarted and resident.status == "loaded" and gone
            resident.info = now
            if now is not None and now.status == "loaded" and now.memory_mb:
                resident.footprint_mb = now.memory_mb
            if now is None or now.status != "loaded":
                resident.endpoint = None
            if now is None and resident.active == 0:
                del self.residents[model_id]
        self._add_cycles(cycles)
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
