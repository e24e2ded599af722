"""Where a request's model goes: one pure function from a fleet snapshot to a decision.

:func:`decide` is the only placement decision the gateway makes; requests, operator loads, pins
and the simulator all ask it (DESIGN §8). In order:

1. a healthy node where the model is loaded (the least busy; not one that is yielding its room
   to a queue passed over for too long, unless no other has it);
2. a node where its load is under way (join it: the neuron shares one load);
3. a node, not cordoned, that knows the model and has the room free now, in cortex.toml's order
   (a model never evicts another while a node has the memory it needs);
4. the node where making room costs least under the strategy (:mod:`~.strategies`): idle
   models unloaded, as few as will do, several at once when several must go;
5. a refusal, ``transient`` when waiting could help (the victims it would need are busy,
   queued, loading or protected) and final when not (pinned models or the devices' size).

A victim is never busy (a request in flight or queued, counted by the gateway from the moment
it accepts one, and waiting in its queue: so a model loaded for a queue serves that queue
first), never pinned on that node, never loading. The footprint is models.toml's ``vram_mb``
unless a load measured it (the caller passes the measured one); an unknown footprint needs
:data:`UNKNOWN_SHARE` of a device, what a neuron gives a load without ``memory_mb``. No I/O,
no clock (the snapshot carries the time), no state but the snapshot.
"""

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from cortex_gateway.placement.snapshot import DeviceRoom, FleetSnapshot, ModelState, Need, NodeState
from cortex_gateway.placement.strategies import Strategy, victim_key, victims_cost

__all__ = [
    "UNKNOWN_SHARE",
    "Ask",
    "Decision",
    "Load",
    "Refuse",
    "Use",
    "decide",
    "fits",
    "in_the_way",
    "pick_devices",
]

UNKNOWN_SHARE = 0.9
"""The share of a device a load of unknown footprint takes (the neuron's ``default_memory_mb
= 0``: 90 % of the device)."""


@dataclass(frozen=True)
class Ask:
    """What a decision is asked for.

    Args:
        model: The model id.
        need: Its footprint (the measured one when there is one) and devices.
        node: Only this node (an operator's load, a pin); else any.
        exclude: Nodes not to use (they already failed this request).
        force: Load where the model is known even when the room looks short (the neuron judges).
        may_load: Whether this gateway loads models at all (``[eviction] lifecycle``).
        may_evict: Whether idle models may be unloaded to make room.
        strategy: Which idle models go first.
    """

    model: str
    need: Need = field(default_factory=Need)
    node: str | None = None
    exclude: frozenset[str] = frozenset()
    force: bool = False
    may_load: bool = True
    may_evict: bool = True
    strategy: Strategy = "lru"


@dataclass(frozen=True)
class Use:
    """Send it to ``node``, where the model is loaded."""

    node: str


@dataclass(frozen=True)
class Load:
    """Load it on ``node`` (on ``devices``; ``None``: the neuron chooses), ``evict`` first.

    A load to join (one under way) has no devices and nothing to evict.
    """

    node: str
    devices: tuple[int, ...] | None = None
    evict: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refuse:
    """No node can take it now: ``reason`` is a metric label, ``message`` for a person.

    ``transient``: waiting may help (busy models will go idle, loads under way will end).
    """

    reason: str
    message: str
    transient: bool = False


Decision = Use | Load | Refuse


@dataclass(frozen=True)
class _Room:
    """How a node could take a load: its devices and the victims that make room there."""

    node: NodeState
    devices: tuple[int, ...]
    evict: tuple[ModelState, ...]


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
    nodes = [
        n
        for n in fleet.nodes
        if n.healthy and n.name not in ask.exclude and (ask.node is None or n.name == ask.node)
    ]
    if ask.node is not None and not nodes:
        return _node_refusal(fleet, ask.node)
    loaded = [n for n in nodes if _status(n, ask.model) == "loaded"]
    serving = [n for n in loaded if not n.models[ask.model].yielding]
    if serving:
        return Use(min(serving, key=lambda n: _busy(n.models[ask.model])).name)
    if loaded:
        return Refuse(
            "yielding",
            f"{ask.model} is making room for a model whose requests have waited too long",
            transient=True,
        )
    if not ask.may_load:
        return Refuse(
            "no_lifecycle",
            f"{ask.model} is not loaded on any node, and this gateway does not load models "
            "([eviction] lifecycle = false)",
        )
    knowing = [n for n in nodes if ask.node is not None or _status(n, ask.model) is not None]
    for node in knowing:
        state = node.models.get(ask.model)
        if state is not None and (state.loading or state.status == "loading"):
            return Load(node.name)  # join it: the neuron shares one load
    open_ = [n for n in knowing if not n.cordoned]
    if ask.node is not None and not open_:
        return Refuse("cordoned", f"node {ask.node} is cordoned: it takes no new loads")
    rooms = [room for n in open_ if (room := _room(n, ask, fleet.now)) is not None]
    free = [r for r in rooms if not r.evict]
    if free:
        return Load(free[0].node.name, free[0].devices or None)
    if rooms:
        best = min(rooms, key=lambda r: victims_cost(r.evict, ask.strategy, fleet.now))
        return Load(best.node.name, best.devices or None, tuple(v.model for v in best.evict))
    if ask.force and open_:
        return Load(open_[0].name)
    return _no_room(open_, ask)


def in_the_way(fleet: FleetSnapshot, ask: Ask) -> set[tuple[str, str]]:
    """The (node, model) pairs ``ask`` would unload if every busy model were idle.

    For a model whose queue has been passed over too long: these are told to yield (no new
    requests), so that they go idle and the decision for ``ask`` can make its room.
    """
    idle = FleetSnapshot(
        nodes=tuple(
            dataclasses.replace(
                n,
                models={
                    m: dataclasses.replace(s, active=0, in_flight=0, queued=0, waiting=0)
                    for m, s in n.models.items()
                },
            )
            for n in fleet.nodes
        ),
        now=fleet.now,
    )
    decision = decide(idle, ask)
    if isinstance(decision, Load):
        return {(decision.node, model) for model in decision.evict}
    return set()


def _busy(state: ModelState) -> tuple[int, int]:
    return state.active + state.waiting, state.in_flight + state.queued


def _evictable(state: ModelState, model: str) -> bool:
    return (
        state.model != model
        and state.status == "loaded"
        and not state.loading
        and not state.pinned
        and state.active == state.in_flight == state.queued == 0
        and (state.waiting == 0 or state.yielding)
    )


def _per_device(need: Need, device: DeviceRoom) -> int:
    per_device = need.mb_per_device
    if per_device is None:
        return math.ceil(device.total_mb * UNKNOWN_SHARE)
    return per_device


def _frees(state: ModelState, device: int) -> int:
    """The memory unloading ``state`` frees on ``device`` (its footprint split evenly)."""
    if device not in state.devices or not state.memory_mb:
        return 0
    return math.ceil(state.memory_mb / len(state.devices))


def _room(node: NodeState, ask: Ask, now: float) -> _Room | None:
    """The cheapest way to fit ``ask`` on ``node``: its devices and victims; ``None``: none."""
    need = ask.need
    victims = sorted(
        (s for s in node.models.values() if _evictable(s, ask.model)),
        key=lambda s: victim_key(s, ask.strategy, now),
    )
    options: list[tuple[DeviceRoom, tuple[ModelState, ...]]] = []
    for device in sorted(node.devices, key=lambda d: d.index):
        wanted = _per_device(need, device)
        if device.total_mb < max(need.device_total_mb, wanted):
            continue
        chosen = _make_room(device, wanted, victims if ask.may_evict else [])
        if chosen is not None:
            options.append((device, chosen))
    if len(options) < need.devices:
        return None
    options.sort(key=lambda o: (victims_cost(o[1], ask.strategy, now), o[0].index))
    picked = options[: need.devices]
    evict = tuple(dict.fromkeys(v for _, chosen in picked for v in chosen))
    return _Room(node, tuple(sorted(d.index for d, _ in picked)), evict)


def _make_room(
    device: DeviceRoom, wanted: int, victims: Sequence[ModelState]
) -> tuple[ModelState, ...] | None:
    """The victims, taken in order, that free ``wanted`` on ``device``; ``None``: they can't.

    Taken until there is room, then pruned so that none of them could stay: no smaller subset
    of them would do.
    """
    short = wanted - device.free_mb
    if short <= 0:
        return ()
    chosen: list[ModelState] = []
    freed = 0
    for victim in victims:
        frees = _frees(victim, device.index)
        if frees <= 0:
            continue
        chosen.append(victim)
        freed += frees
        if freed >= short:
            break
    else:
        return None
    for victim in reversed(chosen[:-1]):  # the last one was needed to reach the room
        if freed - _frees(victim, device.index) >= short:
            chosen.remove(victim)
            freed -= _frees(victim, device.index)
    return tuple(chosen)


def _no_room(nodes: Sequence[NodeState], ask: Ask) -> Refuse:
    size = f" ({ask.need.memory_mb} MiB)" if ask.need.memory_mb else ""
    if ask.node is None:
        message = f"No node has room for {ask.model} now{size}"
    else:
        message = f"node {ask.node} has no room for {ask.model} now{size}"
    return Refuse("no_room", message, transient=any(_may_free(n, ask) for n in nodes))


def _may_free(node: NodeState, ask: Ask) -> bool:
    """Whether ``node`` could take ``ask`` once the models there go idle and loads end.

    Every model but the pinned ones will be idle and evictable some day (busy, queued and
    loading alike); a load under way claims memory its model then holds. Memory that no model
    holds and that is not free (another process's) is never counted on.
    """
    for device in node.devices:
        wanted = _per_device(ask.need, device)
        if device.total_mb < max(ask.need.device_total_mb, wanted):
            continue
        claimed = sum(c.mb_per_device for c in node.claims if device.index in c.devices)
        models = node.models.values()
        could = sum(
            _frees(s, device.index) for s in models if not s.pinned and s.model != ask.model
        )
        if device.free_mb + claimed + could >= wanted:
            return True
    return False


def _node_refusal(fleet: FleetSnapshot, name: str) -> Refuse:
    node = next((n for n in fleet.nodes if n.name == name), None)
    if node is None:
        return Refuse("no_node", f"No node is named {name!r}")
    return Refuse("node_down", f"node {node.name} is {'draining' if node.up else 'down'}")


def _status(node: NodeState, model: str) -> str | None:
    state = node.models.get(model)
    return None if state is None else state.status
