"""Where a request's model goes: one pure function from a fleet snapshot to a decision.

:func:`decide` is the only placement decision the gateway makes; requests, operator loads and
(later) preloads all ask it. For now the policy is the core's: a healthy node where the model
is loaded (the least busy), else one where a load is under way (join it), else the first node
in cortex.toml's order that knows the model and has the room free now, else a refusal. It never
evicts: the placement issue replaces the last step with strategies that do (DESIGN §8). No I/O,
no clock (the snapshot carries the time), no fleet state but the snapshot.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from cortex_gateway.placement.snapshot import DeviceRoom, FleetSnapshot, Need, NodeState

__all__ = ["Ask", "Decision", "Load", "Refuse", "Use", "decide", "fits", "pick_devices"]


@dataclass(frozen=True)
class Ask:
    """What a decision is asked for.

    Args:
        model: The model id.
        need: Its footprint and devices.
        node: Only this node (an operator's load); else any.
        exclude: Nodes not to use (they already failed this request).
        force: Load where the model is known even when the room looks short (the neuron judges).
        may_load: Whether this gateway loads models at all (``[eviction] lifecycle``).
    """

    model: str
    need: Need = field(default_factory=Need)
    node: str | None = None
    exclude: frozenset[str] = frozenset()
    force: bool = False
    may_load: bool = True


@dataclass(frozen=True)
class Use:
    """Send it to ``node``, where the model is loaded."""

    node: str


@dataclass(frozen=True)
class Load:
    """Load it on ``node`` (on ``devices``; ``None``: the neuron chooses), or join that load."""

    node: str
    devices: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Refuse:
    """No node can take it now: ``reason`` is a metric label, ``message`` for a person."""

    reason: str
    message: str


Decision = Use | Load | Refuse


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


def decide(fleet: FleetSnapshot, ask: Ask) -> Decision:
    """Where ``ask.model`` goes in ``fleet``."""
    if ask.node is not None:
        return _on_node(fleet, ask)
    nodes = [n for n in fleet.nodes if n.healthy and n.name not in ask.exclude]
    loaded = [n for n in nodes if _status(n, ask.model) == "loaded"]
    if loaded:
        busy = {n.name: (n.models[ask.model].active, n.models[ask.model].in_flight) for n in loaded}
        return Use(min(loaded, key=lambda n: busy[n.name]).name)
    if not ask.may_load:
        return Refuse(
            "no_lifecycle",
            f"{ask.model} is not loaded on any node, and this gateway does not load models "
            "([eviction] lifecycle = false)",
        )
    knowing = [n for n in nodes if _status(n, ask.model) is not None]
    for node in knowing:
        state = node.models[ask.model]
        if state.loading or state.status == "loading":
            return Load(node.name)  # join it: the neuron shares one load
    for node in knowing:
        if node.cordoned:
            continue
        devices = pick_devices(node.devices, ask.need, free=True)
        if devices is not None:
            return Load(node.name, devices or None)
    movable = [n for n in knowing if not n.cordoned]
    if ask.force and movable:
        return Load(movable[0].name)
    size = f" ({ask.need.memory_mb} MiB)" if ask.need.memory_mb else ""
    return Refuse("no_room", f"No node has room for {ask.model} now{size}")


def _on_node(fleet: FleetSnapshot, ask: Ask) -> Decision:
    node = next((n for n in fleet.nodes if n.name == ask.node), None)
    if node is None:
        return Refuse("no_node", f"No node is named {ask.node!r}")
    if not node.healthy:
        return Refuse("node_down", f"node {node.name} is {'draining' if node.up else 'down'}")
    status = _status(node, ask.model)
    if status == "loaded":
        return Use(node.name)
    if node.cordoned:
        return Refuse("cordoned", f"node {node.name} is cordoned: it takes no new loads")
    if status == "loading" or (status is not None and node.models[ask.model].loading):
        return Load(node.name)
    devices = pick_devices(node.devices, ask.need, free=True)
    if devices is None and not ask.force:
        return Refuse(
            "no_room",
            f"node {node.name} has no room for {ask.model} now ({ask.need.memory_mb} MiB)",
        )
    return Load(node.name, devices or None)


def _status(node: NodeState, model: str) -> str | None:
    state = node.models.get(model)
    return None if state is None else state.status
