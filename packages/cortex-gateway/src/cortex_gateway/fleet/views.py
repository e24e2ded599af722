"""The fleet as ``/health`` and ``/fleet`` show it (DESIGN §4), and what ``cortex status`` reads.

Views are built from the nodes' last polled state; building one never calls a neuron.
"""

from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

from cortex_core.wire.control import ModelStatus
from cortex_core.wire.models import ModelLocation
from cortex_gateway.fleet.catalogue import Catalogue
from cortex_gateway.fleet.node import Node

__all__ = [
    "DeviceView",
    "FleetModelView",
    "FleetView",
    "HealthView",
    "NodeCount",
    "NodeModelView",
    "NodeView",
    "fleet_view",
    "health_view",
]


class NodeCount(msgspec.Struct, kw_only=True, frozen=True):
    """How many nodes are healthy, of how many configured."""

    healthy: int
    total: int


class HealthView(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /health``: ``ok`` when every node is healthy; HTTP 503 when none is."""

    status: Literal["ok", "degraded"]
    nodes: NodeCount


class DeviceView(msgspec.Struct, kw_only=True, frozen=True):
    """One device of a node: what it is, from ``/discovery``; its readings, from ``/health``."""

    index: int
    kind: str
    name: str
    memory_total_mb: int
    memory_free_mb: int | None = None
    utilization_pct: int | None = None


class NodeModelView(msgspec.Struct, kw_only=True, frozen=True):
    """A model a node knows."""

    id: str
    status: ModelStatus
    memory_mb: int | None = None
    in_flight: int = 0
    queued: int = 0
    """Waiting in the neuron's queue beyond its engine's batch."""
    last_used: float | None = None
    pinned: bool = False


class NodeView(msgspec.Struct, kw_only=True, frozen=True):
    """One node, as the gateway last saw it."""

    name: str
    endpoint: str
    up: bool
    last_poll: float | None
    consecutive_failures: int
    load_unload_cycles: int
    defrag_due: bool
    cordoned: bool
    draining: bool
    devices: list[DeviceView]
    models: list[NodeModelView]


class FleetModelView(msgspec.Struct, kw_only=True, frozen=True):
    """A model of the fleet, its other names and where it is."""

    id: str
    aliases: list[str]
    locations: list[ModelLocation]
    queued: int = 0
    """Requests waiting in this gateway's queue for it (loading, or waiting for room)."""


class FleetView(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /fleet``."""

    nodes: list[NodeView]
    models: list[FleetModelView]


def health_view(nodes: Sequence[Node]) -> HealthView:
    """``/health``'s body; the caller answers 503 when ``nodes.healthy`` is 0."""
    healthy = sum(node.healthy for node in nodes)
    status: Literal["ok", "degraded"] = "ok" if 0 < healthy == len(nodes) else "degraded"
    return HealthView(status=status, nodes=NodeCount(healthy=healthy, total=len(nodes)))


def fleet_view(
    nodes: Sequence[Node], catalogue: Catalogue, waiting: Mapping[str, int] | None = None
) -> FleetView:
    """``/fleet``'s body: every node, every model the fleet knows."""
    return FleetView(
        nodes=[_node_view(node, catalogue) for node in nodes],
        models=[
            FleetModelView(
                id=model_id,
                aliases=list(catalogue.aliases(model_id)),
                locations=seen.locations,
            )
            for model_id, seen in catalogue.survey().items()
        ],
    )


def _node_view(node: Node, catalogue: Catalogue) -> NodeView:
    readings = {d.index: d for d in node.health.devices} if node.health else {}
    devices = []
    for device in node.discovery.devices if node.discovery else ():
        reading = readings.get(device.index)
        devices.append(
            DeviceView(
                index=device.index,
                kind=device.kind,
                name=device.name,
                memory_total_mb=device.memory_total_mb,
                memory_free_mb=reading.memory_free_mb if reading else None,
                utilization_pct=reading.utilization_pct if reading else None,
            )
        )
    models = []
    for resident in node.residents.values():
        info = resident.info
        if info is None:
            continue
        profile = catalogue.profile(info.id)
        models.append(
            NodeModelView(
                id=info.id,
                status=info.status,
                memory_mb=info.memory_mb,
                in_flight=info.in_flight,
                queued=resident.queued,
                last_used=info.last_used,
                pinned=profile is not None and node.name in profile.pinned_on,
            )
        )
    return NodeView(
        name=node.name,
        endpoint=node.peer.endpoint,
        up=node.up,
        last_poll=node.last_poll,
        consecutive_failures=node.consecutive_failures,
        load_unload_cycles=node.cycles,
        defrag_due=node.defrag_due,
        cordoned=node.cordoned,
        draining=node.draining,
        devices=devices,
        models=models,
    )
