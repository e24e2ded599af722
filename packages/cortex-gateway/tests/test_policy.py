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
