"""First-fit placement, a pure function of device memory and a footprint."""

import pytest

from cortex_core.config import ModelProfile
from cortex_gateway.placement.policy import (
    Candidate,
    DeviceRoom,
    Need,
    Placement,
    first_fit,
    fits,
    pick_devices,
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


def test_first_fit_takes_the_first_node_with_room_now():
    candidates = [
        Candidate("a", rooms(1000)),
        Candidate("b", rooms(6000)),
        Candidate("c", rooms(9000)),
    ]
    assert first_fit(candidates, Need(5000)) == Placement("b", (0,))
    assert first_fit(candidates, Need(10000)) is None
    assert first_fit(candidates, Need()) == Placement("a", None)
    assert first_fit([], Need()) is None
