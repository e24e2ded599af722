import json

import pytest

from cortex_core.config import VllmOptions
from cortex_core.errors import InvalidSpecError, OutOfMemoryError
from cortex_neuron.devices import Devices

from .test_nvml import FIXTURES, FakeNvml


@pytest.fixture
def two_gpus():
    snapshot = json.loads((FIXTURES / "nvml-h100-snapshot.json").read_text())
    second = {**snapshot["devices"][0], "uuid": "GPU-second"}
    return FakeNvml({**snapshot, "device_count": 2, "devices": [*snapshot["devices"], second]})


def test_gpu_discovery(two_gpus):
    devices = Devices.probe(VllmOptions(), two_gpus)
    discovery = devices.discovery
    assert discovery.cuda_version == "13.0"
    assert discovery.driver_version == "580.159.04"
    assert discovery.gpu_unavailable_reason is None
    assert [d.uuid for d in discovery.devices] == [
        "GPU-e13fba1b-dc58-a80d-fab8-858a685e18ea",
        "GPU-second",
    ]
    assert devices.kind == "gpu"
    assert [h.memory_free_mb for h in devices.health()] == [81079, 81079]


def test_gpu_placement_takes_the_freest_devices_and_counts_reservations(two_gpus):
    devices = Devices.probe(VllmOptions(), two_gpus)
    assert devices.choose(None, 1, 50000) == [0]
    devices.reserve([0], 50000)
    assert devices.available_mb(0) == 81559 - 50000
    assert devices.choose(None, 1, 50000) == [1]
    assert devices.choose(None, 2, 40000) == [0, 1]
    with pytest.raises(OutOfMemoryError, match="device 0: 31559 MiB"):
        devices.choose([0], 1, 40000)
    devices.release([0], 50000)
    assert devices.available_mb(0) == 81079  # NVML's free memory bounds it


def test_explicit_devices_must_exist_and_match_the_parallelism(two_gpus):
    devices = Devices.probe(VllmOptions(), two_gpus)
    assert devices.choose([1], 1, 100) == [1]
    with pytest.raises(InvalidSpecError):
        devices.choose([2], 1, 100)
    with pytest.raises(InvalidSpecError):
        devices.choose([0], 2, 100)
    with pytest.raises(InvalidSpecError, match="this host has 2"):
        devices.choose(None, 3, 100)


def test_default_memory(two_gpus):
    devices = Devices.probe(VllmOptions(), two_gpus)
    assert devices.default_memory_mb(VllmOptions(), 1) == int(81559 * 0.9)
    assert devices.default_memory_mb(VllmOptions(), 2) == int(81559 * 0.9) * 2
    assert devices.default_memory_mb(VllmOptions(default_memory_mb=9000), 2) == 9000


def test_a_failed_refresh_keeps_the_last_readings(two_gpus):
    devices = Devices.probe(VllmOptions(), two_gpus)

    def broken(handle, version=None):
        raise two_gpus.NVMLError("GPU is lost")

    two_gpus.nvmlDeviceGetMemoryInfo = broken
    devices.refresh()
    assert [h.memory_free_mb for h in devices.health()] == [81079, 81079]


def test_the_cpu_pool_defaults_to_half_the_ram():
    class NoGpu(FakeNvml):
        def nvmlInit(self):
            raise self.NVMLError("NVML Shared Library Not Found")

    devices = Devices.probe(VllmOptions(), NoGpu({}))
    (device,) = devices.devices
    assert device.kind == "cpu"
    assert device.memory_total_mb > 0
    devices.refresh()
    assert devices.health()[0].memory_free_mb == device.memory_total_mb


def test_the_default_cpu_pool_leaves_room_for_the_warm_spare():
    class NoGpu(FakeNvml):
        def nvmlInit(self):
            raise self.NVMLError("NVML Shared Library Not Found")

    whole = Devices.probe(VllmOptions(), NoGpu({})).devices[0].memory_total_mb
    spared = Devices.probe(VllmOptions(), NoGpu({}), spare_mb=1024)
    assert spared.devices[0].memory_total_mb == whole - 1024
    assert spared.discovery.spare_memory_mb == 1024
    explicit = Devices.probe(VllmOptions(cpu_memory_mb=4096), NoGpu({}), spare_mb=1024)
    assert explicit.devices[0].memory_total_mb == 4096  # an operator's figure is kept as it is


def test_probe_uses_the_real_binding_when_given_none():
    devices = Devices.probe(VllmOptions(cpu_memory_mb=64))
    assert devices.devices[0].memory_total_mb in (64, *[d.memory_total_mb for d in devices.devices])
