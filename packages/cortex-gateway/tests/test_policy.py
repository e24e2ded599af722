"""Placement: one pure function from a fleet snapshot and an ask to a decision."""

import pytest

from cortex_core.config import ModelProfile
from cortex_gateway.placement.policy import Ask, Load, Refuse, Use, decide, fits, pick_devices
from cortex_gateway.placement.snapshot import (
    DeviceRoom,
    FleetSnapshot,
    ModelState,
    Need,
    NodeState,
)


def rooms(*free: int, total: int = 10000) -> list[DeviceRoom]:
    return [DeviceRoom(index=i, total_mb=total, free_mb=f) for i, f in enumerate(free)]


def test_a_profile_states_the_need_and_no_profile_is_an_unknown_footprint():
    profile = ModelProfile(id="m", vram_mb=9000, min_devices=2, min_device_vram_mb=40000)
    assert Need.of(profile) == Need(memory_mb=9000, devices=2, device_total_mb=40000)
    assert Need.of(profile).mb_per_device == 4500
    assert Need.of(None) == Need()
    assert Need.of(None).mb_per_device is None


@pytest.mark.parametrize(
    ("free", "need", "expected"),
    [
        ((5000,), Need(4000), (0,)),
        ((3000, 5000), Need(4000), (1,)),
        ((3000, 3000), Need(4000), None),
        ((3000, 2500, 2000), Need(5000, devices=2), (0, 1)),
        ((3000, 2000, 2600), Need(5000, devices=2), (0, 2)),
        ((9000,), Need(5000, devices=2), None),
        ((0,), Need(), ()),
        ((), Need(), None),
    ],
)
def test_pick_devices_takes_the_first_devices_with_room(free, need, expected):
    assert pick_devices(rooms(*free), need, free=True) == expected


def test_a_device_too_small_in_total_is_never_picked():
    small = [DeviceRoom(index=0, total_mb=8000, free_mb=8000)]
    assert pick_devices(small, Need(1000, device_total_mb=16000), free=True) is None
    assert pick_devices(small, Need(device_total_mb=16000), free=False) is None


def test_fits_looks_at_total_memory_not_free():
    assert fits(rooms(0, total=9000), Need(9000))
    assert not fits(rooms(9000, total=9000), Need(9001))


def node(name: str, *free: int, up: bool = True, cordoned: bool = False, **models: ModelState):
    return NodeState(
        name=name, up=up, cordoned=cordoned, devices=tuple(rooms(*free)), models=models
    )


def knows(status: str = "available", **fields) -> ModelState:
    return ModelState(model="m", status=status, **fields)  # type: ignore[arg-type]


def fleet(*nodes: NodeState) -> FleetSnapshot:
    return FleetSnapshot(nodes=nodes, now=1000.0)


def test_first_fit_takes_the_first_node_with_room_now():
    snapshot = fleet(
        node("a", 1000, m=knows()), node("b", 6000, m=knows()), node("c", 9000, m=knows())
    )
    assert decide(snapshot, Ask("m", Need(5000))) == Load("b", (0,))
    assert isinstance(decide(snapshot, Ask("m", Need(10000))), Refuse)
    # an unknown footprint takes 90 % of a device, as the neuron gives a load without memory_mb
    assert decide(snapshot, Ask("m", Need())) == Load("c", (0,))
    assert isinstance(decide(fleet(), Ask("m", Need())), Refuse)


def test_a_loaded_replica_wins_and_the_least_busy_one_first():
    snapshot = fleet(
        node("a", 9000, m=knows("loaded", active=2)),
        node("b", 9000, m=knows("loaded", active=1, in_flight=5)),
        node("c", 9000, m=knows("loaded", active=1, in_flight=3)),
    )
    assert decide(snapshot, Ask("m")) == Use("c")
    assert decide(snapshot, Ask("m", exclude=frozenset({"c"}))) == Use("b")


def test_a_load_under_way_is_joined_before_a_new_one_is_placed():
    snapshot = fleet(node("a", 9000, m=knows()), node("b", 0, m=knows(loading=True)))
    assert decide(snapshot, Ask("m", Need(5000))) == Load("b")
    assert decide(fleet(node("a", 0, m=knows("loading"))), Ask("m", Need(5000))) == Load("a")


def test_nodes_that_are_down_cordoned_or_do_not_know_the_model_take_no_load():
    snapshot = fleet(
        node("down", 9000, up=False, m=knows()),
        node("cordoned", 9000, cordoned=True, m=knows()),
        node("stranger", 9000),
        node("full", 100, m=knows()),
    )
    refused = decide(snapshot, Ask("m", Need(5000)))
    assert refused == Refuse("no_room", "No node has room for m now (5000 MiB)")
    assert decide(snapshot, Ask("m", Need(5000), force=True)) == Load("full")


def test_a_gateway_that_does_not_load_refuses_a_cold_model():
    snapshot = fleet(node("a", 9000, m=knows()))
    assert decide(snapshot, Ask("m", may_load=False)).reason == "no_lifecycle"  # type: ignore[union-attr]
    loaded = fleet(node("a", 9000, m=knows("loaded")))
    assert decide(loaded, Ask("m", may_load=False)) == Use("a")


@pytest.mark.parametrize(
    ("state", "ask", "expected"),
    [
        (node("a", 9000, m=knows("loaded")), Ask("m", node="a"), Use("a")),
        (node("a", 9000), Ask("m", Need(5000), node="a"), Load("a", (0,))),
        (node("a", 100), Ask("m", Need(5000), node="a", force=True), Load("a", None)),
        (node("a", 100, m=knows(loading=True)), Ask("m", Need(5000), node="a"), Load("a")),
        (
            node("a", 100),
            Ask("m", Need(5000), node="a"),
            Refuse("no_room", "node a has no room for m now (5000 MiB)"),
        ),
        (node("a", 9000), Ask("m", node="b"), Refuse("no_node", "No node is named 'b'")),
        (node("a", 9000, up=False), Ask("m", node="a"), Refuse("node_down", "node a is down")),
        (
            node("a", 9000, cordoned=True),
            Ask("m", node="a"),
            Refuse("cordoned", "node a is cordoned: it takes no new loads"),
        ),
    ],
)
def test_an_operator_load_on_one_node(state, ask, expected):
    assert decide(fleet(state), ask) == expected


def resident(model: str, mb: int, used: float | None = None, **fields) -> ModelState:
    return ModelState(
        model=model, status="loaded", memory_mb=mb, devices=(0,), last_used=used, **fields
    )


def full(name: str, *models: ModelState, free: int = 0, total: int = 10000) -> NodeState:
    states = {s.model: s for s in models}
    states["m"] = knows()
    return NodeState(
        name=name,
        up=True,
        devices=(DeviceRoom(index=0, total_mb=total, free_mb=free),),
        models=states,
    )


@pytest.mark.parametrize(
    ("residents", "strategy", "victims"),
    [
        # the least recently used goes first, and only as many as needed
        ((resident("x", 5000, 10), resident("y", 5000, 20)), "lru", ("x",)),
        (
            (resident("x", 3000, 10), resident("y", 3000, 20), resident("z", 3000, 30)),
            "lru",
            ("x", "y"),
        ),
        # busy, queued, waiting, loading and pinned models are never victims
        ((resident("x", 5000, 10, active=1), resident("y", 5000, 20)), "lru", ("y",)),
        ((resident("x", 5000, 10, queued=1), resident("y", 5000, 20)), "lru", ("y",)),
        ((resident("x", 5000, 10, waiting=1), resident("y", 5000, 20)), "lru", ("y",)),
        ((resident("x", 5000, 10, pinned=True), resident("y", 5000, 20)), "lru", ("y",)),
        ((resident("x", 5000, 10, in_flight=2), resident("y", 5000, 20)), "lru", ("y",)),
        # a yielding model's waiters do not protect it
        (
            (resident("x", 5000, 10, waiting=1, yielding=True), resident("y", 5000, 20)),
            "lru",
            ("x",),
        ),
        # priority: the lowest priority first, whatever its recency
        (
            (resident("x", 5000, 10, priority=50), resident("y", 5000, 20, priority=10)),
            "priority",
            ("y",),
        ),
        # cost: what is cheap to reload per MiB goes first
        (
            (resident("x", 5000, 10, load_seconds=300), resident("y", 5000, 10, load_seconds=5)),
            "cost",
            ("y",),
        ),
        # the smallest set that will do: the one big enough alone, not the two stale small ones
        (
            (resident("x", 2000, 10), resident("y", 6000, 20), resident("z", 2000, 30)),
            "lru",
            ("y",),
        ),
    ],
)
def test_victims(residents, strategy, victims):
    decision = decide(fleet(full("a", *residents)), Ask("m", Need(5000), strategy=strategy))
    assert isinstance(decision, Load)
    assert set(decision.evict) == set(victims)


def test_a_node_with_room_wins_over_one_that_must_evict():
    evicting = full("a", resident("x", 9000, 10))
    roomy = full("b", free=6000)
    assert decide(fleet(evicting, roomy), Ask("m", Need(5000))) == Load("b", (0,))


def test_the_node_whose_evictions_cost_least_wins():
    recent = full("a", resident("x", 9000, 500))
    stale = full("b", resident("y", 9000, 100))
    assert decide(fleet(recent, stale), Ask("m", Need(5000))).evict == ("y",)  # type: ignore[union-attr]


def test_no_eviction_is_asked_when_evicting_is_not_allowed():
    decision = decide(
        fleet(full("a", resident("x", 9000, 10))), Ask("m", Need(5000), may_evict=False)
    )
    assert isinstance(decision, Refuse)


def test_busy_models_make_a_refusal_worth_waiting_for_and_pins_do_not():
    busy = decide(fleet(full("a", resident("x", 9000, 10, active=1))), Ask("m", Need(5000)))
    pinned = decide(fleet(full("a", resident("x", 9000, 10, pinned=True))), Ask("m", Need(5000)))
    assert (busy.reason, busy.transient) == ("no_room", True)  # type: ignore[union-attr]
    assert (pinned.reason, pinned.transient) == ("no_room", False)  # type: ignore[union-attr]


def test_a_yielding_replica_takes_no_new_requests():
    state = full("a", resident("m2", 1000, 10))
    loaded_yielding = NodeState(
        name="a",
        up=True,
        devices=state.devices,
        models={
            "m": ModelState(model="m", status="loaded", memory_mb=1000, devices=(0,), yielding=True)
        },
    )
    other = NodeState(
        name="b",
        up=True,
        devices=state.devices,
        models={"m": ModelState(model="m", status="loaded", memory_mb=1000, devices=(0,))},
    )
    assert decide(fleet(loaded_yielding, other), Ask("m")) == Use("b")
    refused = decide(fleet(loaded_yielding), Ask("m"))
    assert (refused.reason, refused.transient) == ("yielding", True)  # type: ignore[union-attr]


def test_in_the_way_names_what_a_passed_over_model_would_evict_were_it_idle():
    from cortex_gateway.placement.policy import in_the_way

    snapshot = fleet(full("a", resident("x", 9000, 10, active=3)))
    assert in_the_way(snapshot, Ask("m", Need(5000))) == {("a", "x")}
    assert in_the_way(fleet(full("a", free=9000)), Ask("m", Need(5000))) == set()
    assert snapshot.yielding({("a", "x")}).nodes[0].models["x"].yielding
