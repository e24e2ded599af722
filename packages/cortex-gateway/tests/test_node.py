"""A node's state: polls applied over the gateway's own changes, cycles, memory reservations."""

import logging

import msgspec

from cortex_core.config import NeuronPeer
from cortex_core.wire.control import Device, DeviceHealth, Discovery, Health, ModelInfo
from cortex_gateway.fleet.node import Node, Reservation
from cortex_gateway.placement.snapshot import DeviceRoom

PEER = NeuronPeer(name="n1", endpoint="http://127.0.0.1:1")
DISCOVERY = Discovery(
    hostname="h",
    os="Linux",
    kernel="6",
    version="0.1.0",
    devices=[Device(index=0, kind="gpu", uuid="u", name="g", memory_total_mb=10000)],
)


def health(uptime: int = 100, free: int = 8000, draining: bool = False) -> Health:
    device = DeviceHealth(index=0, memory_used_mb=10000 - free, memory_free_mb=free)
    return Health(uptime_secs=uptime, draining=draining, devices=[device])


def loaded(model_id: str) -> ModelInfo:
    return ModelInfo(id=model_id, status="loaded", devices=[0], memory_mb=1000)


def available(model_id: str) -> ModelInfo:
    return ModelInfo(id=model_id)


def test_a_fresh_node_needs_discovery_and_is_down_until_polled():
    node = Node(PEER)
    assert not Node(PEER).healthy
    assert node.needs_discovery(health())
    assert node.rooms() == []
    node.apply_poll(health(), [loaded("a")], DISCOVERY, started=0)
    assert node.healthy
    assert not node.needs_discovery(health(uptime=101))
    assert node.needs_discovery(health(uptime=5))  # a restart
    assert node.status("a") == "loaded"
    assert node.status("b") is None


def test_draining_is_not_healthy():
    node = Node(PEER)
    node.apply_poll(health(draining=True), [], DISCOVERY, started=0)
    assert node.up
    assert node.draining
    assert not node.healthy


def test_three_failed_polls_mark_it_down():
    node = Node(PEER)
    node.apply_poll(health(), [], DISCOVERY, started=0)
    assert [node.poll_failed() for _ in range(4)] == [False, False, True, False]
    assert not node.up
    assert node.discovery is None
    assert node.needs_discovery(health())


def test_cycles_count_models_seen_unloaded_after_being_loaded():
    node = Node(PEER)
    node.apply_poll(health(), [loaded("a"), loaded("b"), loaded("c")], DISCOVERY, started=0)
    unloading = msgspec.structs.replace(loaded("b"), status="unloading")
    revealed = node.apply_poll(health(uptime=101), [available("a"), unloading], None, started=1)
    assert revealed == 2  # a went back to available, c disappeared; b is still on its way
    assert node.cycles == 2


def test_a_restart_resets_cycles_and_forgets_endpoints():
    node = Node(PEER)
    node.apply_poll(health(), [loaded("a")], DISCOVERY, started=0)
    node.resident("a").endpoint = "http://x"
    node.cycles = 7
    assert node.apply_poll(health(uptime=3), [available("a")], DISCOVERY, started=1) == 0
    assert node.cycles == 0
    assert node.endpoints == {}


def test_a_change_made_after_a_poll_began_survives_that_poll():
    node = Node(PEER)
    node.apply_poll(health(), [available("a")], DISCOVERY, started=0)
    begun = -1.0  # the poll began before the gateway's load finished
    assert node.set_model(loaded("a"), "http://a") == 0
    node.apply_poll(health(uptime=101), [available("a")], None, started=begun)
    assert node.status("a") == "loaded"
    assert node.endpoints == {"a": "http://a"}
    node.apply_poll(health(uptime=102), [available("a")], None, started=float("inf"))
    assert node.status("a") == "available"  # a later poll wins: someone unloaded it
    assert node.endpoints == {}
    assert node.cycles == 1


def test_set_model_counts_an_unload_as_a_cycle_and_drops_the_endpoint():
    node = Node(PEER)
    node.apply_poll(health(), [loaded("a")], DISCOVERY, started=0)
    node.resident("a").endpoint = "http://a"
    assert node.set_model(available("a")) == 1
    assert node.endpoints == {}
    assert node.set_model(available("a")) == 0


def test_defrag_is_due_after_the_configured_cycles_and_warned_once(caplog):
    node = Node(PEER, defrag_after=2)
    node.apply_poll(health(), [loaded("a")], DISCOVERY, started=0)
    with caplog.at_level(logging.WARNING, logger="cortex_gateway.fleet"):
        node.set_model(available("a"))
        due = [node.defrag_due]
        node.set_model(loaded("a"))
        node.set_model(available("a"))
        node.set_model(loaded("a"))
        node.set_model(available("a"))
        due.append(node.defrag_due)
    assert due == [False, True]
    assert [r.message for r in caplog.records if "fragmented" in r.message] == [
        "node n1 has had 2 load/unload cycles since its neuron started: device memory may be "
        "fragmented; restart the neuron when it is idle"
    ]
    assert not Node(PEER).defrag_due  # 0: never


def test_rooms_subtract_reservations_until_a_poll_started_after_the_load_ended():
    node = Node(PEER)
    node.apply_poll(health(free=8000), [], DISCOVERY, started=0)
    reservation = Reservation((0,), 3000)
    node.reservations.append(reservation)
    assert node.rooms() == [DeviceRoom(index=0, total_mb=10000, free_mb=5000)]
    node.apply_poll(health(free=8000), [], None, started=1)
    assert node.rooms()[0].free_mb == 5000  # still loading: kept
    reservation.done_at = 2
    node.apply_poll(health(free=8000), [], None, started=1.5)
    assert node.rooms()[0].free_mb == 5000  # this poll began before the load ended
    node.apply_poll(health(free=5000), [], None, started=3)
    assert node.reservations == []
    assert node.rooms()[0].free_mb == 5000


def test_one_record_per_model_keeps_the_gateways_facts_beside_the_neurons():
    node = Node(PEER)
    node.apply_poll(health(), [loaded("a")], DISCOVERY, started=0)
    record = node.resident("a")
    record.active = 1
    node.apply_poll(health(uptime=101), [], None, started=1)
    assert node.resident("a") is record  # a request still runs there: the record stays
    assert node.status("a") is None
    record.active = 0
    node.apply_poll(health(uptime=102), [], None, started=2)
    assert "a" not in node.residents


def test_the_state_placement_reads_carries_pins_priorities_and_claims():
    from cortex_core.config import ModelProfile

    node = Node(PEER)
    node.apply_poll(health(free=8000), [loaded("a"), available("b")], DISCOVERY, started=0)
    node.resident("a").active = 2
    node.resident("a").load_seconds = 12.5
    node.reservations.append(Reservation((0,), 3000))
    profiles = {"a": ModelProfile(id="a", pinned_on=("n1",), priority=7)}
    state = node.state(profiles, loading={"b"}, waiting={"a": 3})
    a, b = state.models["a"], state.models["b"]
    assert (a.status, a.active, a.pinned, a.priority, a.load_seconds) == (
        "loaded",
        2,
        True,
        7,
        12.5,
    )
    assert (b.status, b.loading, b.pinned, b.priority) == ("available", True, False, 100)
    assert [(c.devices, c.mb_per_device) for c in state.claims] == [((0,), 3000)]
    assert state.devices[0].free_mb == 5000
    assert state.healthy
    assert not state.cordoned
