"""Properties of decide() over random fleets (hypothesis): what a Load may evict, and how much."""

import math

from hypothesis import given, settings, strategies as st

from cortex_gateway.placement.policy import Ask, Load, decide, pick_devices
from cortex_gateway.placement.snapshot import DeviceRoom, FleetSnapshot, ModelState, Need, NodeState
from cortex_gateway.placement.strategies import Strategy

STRATEGIES: tuple[Strategy, ...] = ("lru", "priority", "cost")
NOW = 1_000.0
SIZES = (8_000, 16_000, 24_000)


@st.composite
def nodes(draw: st.DrawFn, name: str) -> NodeState:
    totals = draw(st.lists(st.sampled_from(SIZES), min_size=1, max_size=2))
    used = [0] * len(totals)
    models: dict[str, ModelState] = {}
    for i in range(draw(st.integers(0, 5))):
        device = draw(st.integers(0, len(totals) - 1))
        memory = draw(st.integers(500, 12_000))
        if used[device] + memory > totals[device]:
            continue
        used[device] += memory
        model = f"m{i}"
        models[model] = ModelState(
            model=model,
            status="loaded",
            memory_mb=memory,
            devices=(device,),
            last_used=draw(st.none() | st.floats(0, NOW)),
            active=draw(st.sampled_from((0, 0, 1))),
            in_flight=draw(st.sampled_from((0, 0, 1))),
            queued=draw(st.sampled_from((0, 0, 1))),
            waiting=draw(st.sampled_from((0, 0, 2))),
            yielding=draw(st.booleans()),
            pinned=draw(st.sampled_from((False, False, True))),
            loading=draw(st.sampled_from((False, False, True))),
            priority=draw(st.integers(0, 200)),
            load_seconds=draw(st.none() | st.floats(1, 120)),
        )
    models["want"] = ModelState(model="want", status="available")
    rooms = tuple(DeviceRoom(i, t, t - used[i]) for i, t in enumerate(totals))
    return NodeState(
        name=name,
        up=True,
        cordoned=draw(st.sampled_from((False, False, True))),
        devices=rooms,
        models=models,
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[FleetSnapshot, Ask]:
    count = draw(st.integers(1, 3))
    fleet = FleetSnapshot(tuple(draw(nodes(f"n{i}")) for i in range(count)), NOW)
    need = Need(draw(st.integers(1_000, 30_000)), draw(st.sampled_from((1, 1, 2))))
    strategy: Strategy = draw(st.sampled_from(STRATEGIES))
    return fleet, Ask("want", need=need, strategy=strategy)


def busy(state: ModelState) -> bool:
    working = state.active or state.in_flight or state.queued
    return bool(working or (state.waiting and not state.yielding))


def room_after(node: NodeState, evict: tuple[str, ...], device: int) -> int:
    room = next(d for d in node.devices if d.index == device)
    freed = sum(
        math.ceil((s.memory_mb or 0) / len(s.devices))
        for m, s in node.models.items()
        if m in evict and device in s.devices
    )
    return room.free_mb + freed


def fits_after(node: NodeState, ask: Ask, evict: tuple[str, ...], devices: tuple[int, ...]) -> bool:
    per_device = ask.need.mb_per_device or 0
    return all(room_after(node, evict, d) >= per_device for d in devices)


def evicting(fleet: FleetSnapshot, ask: Ask) -> tuple[NodeState, Load] | None:
    decision = decide(fleet, ask)
    if not isinstance(decision, Load) or not decision.evict:
        return None
    return next(n for n in fleet.nodes if n.name == decision.node), decision


@settings(max_examples=120, deadline=None)
@given(cases())
def test_a_victim_is_never_busy_loading_or_pinned(case: tuple[FleetSnapshot, Ask]) -> None:
    found = evicting(*case)
    if found is not None:
        node, load = found
        for victim in load.evict:
            state = node.models[victim]
            assert not busy(state)
            assert not state.loading
            assert not state.pinned
            assert state.status == "loaded"


@settings(max_examples=120, deadline=None)
@given(cases())
def test_after_the_evictions_the_model_fits_and_no_victim_could_stay(
    case: tuple[FleetSnapshot, Ask],
) -> None:
    fleet, ask = case
    found = evicting(fleet, ask)
    if found is not None:
        node, load = found
        assert load.devices is not None
        assert len(load.devices) == ask.need.devices
        assert fits_after(node, ask, load.evict, load.devices)
        # Irreducible: freeing is monotonic, so if any proper subset did, one less victim would.
        for victim in load.evict:
            fewer = tuple(v for v in load.evict if v != victim)
            assert not fits_after(node, ask, fewer, load.devices)


@settings(max_examples=120, deadline=None)
@given(cases())
def test_nothing_is_evicted_while_an_open_node_has_the_room_free(
    case: tuple[FleetSnapshot, Ask],
) -> None:
    fleet, ask = case
    if evicting(fleet, ask) is not None:
        for node in fleet.nodes:
            if node.healthy and not node.cordoned:
                assert pick_devices(node.devices, ask.need, free=True) is None
