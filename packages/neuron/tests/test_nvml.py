"""The NVML readings of a real H100 (../fixtures, recorded with nvidia-ml-py), through a fake
binding that answers exactly what the driver answered."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from cortex_core.wire.control import DeviceHealth
from cortex_neuron import nvml

FIXTURES = Path(__file__).parent / "fixtures"


class FakeNvml:
    """nvidia-ml-py's module surface, answering from recorded readings."""

    nvmlMemory_v2 = 0x02000028
    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self, snapshot, *, memory_v2=True, sample=None, broken=()):
        self.snapshot = snapshot
        self.memory_v2 = memory_v2
        self.sample = sample
        self.broken = set(broken)
        self.initialised = False

    def nvmlInit(self):
        self.initialised = True

    def nvmlSystemGetDriverVersion(self):
        return self.snapshot["driver_version"]

    def nvmlSystemGetCudaDriverVersion_v2(self):
        return self.snapshot["cuda_driver_version"]

    def nvmlDeviceGetCount(self):
        return self.snapshot["device_count"]

    def nvmlDeviceGetHandleByIndex(self, index):
        return self.snapshot["devices"][index]

    def nvmlDeviceGetName(self, handle):
        return handle["name"].encode()

    def nvmlDeviceGetUUID(self, handle):
        return handle["uuid"]

    def nvmlDeviceGetCudaComputeCapability(self, handle):
        return tuple(handle["compute_capability"])

    def nvmlDeviceGetMemoryInfo(self, handle, version=None):
        if version is not None:
            if not self.memory_v2:
                raise self.NVMLError("Function Not Found")
            return SimpleNamespace(**handle["memory_v2"])
        return SimpleNamespace(**(self.sample or handle)["memory"])

    def nvmlDeviceGetUtilizationRates(self, handle):
        if "utilization" in self.broken:
            raise self.NVMLError("Not Supported")
        return SimpleNamespace(**(self.sample or handle)["utilization"])

    def nvmlDeviceGetTemperature(self, handle, sensor):
        assert sensor == self.NVML_TEMPERATURE_GPU
        return (self.sample or handle)["temperature_c"]


@pytest.fixture
def snapshot():
    return json.loads((FIXTURES / "nvml-h100-snapshot.json").read_text())


def test_inventory_of_an_h100(snapshot):
    inventory = nvml.read_inventory(FakeNvml(snapshot))
    assert inventory.driver_version == "580.159.04"
    assert inventory.cuda_version == "13.0"
    (device,) = inventory.devices
    assert device.kind == "gpu"
    assert device.uuid == "GPU-e13fba1b-dc58-a80d-fab8-858a685e18ea"
    assert device.name == "NVIDIA H100 80GB HBM3"
    assert device.memory_total_mb == 81559  # what nvidia-smi -q reports
    assert device.compute_capability == "9.0"


def test_idle_health_matches_nvidia_smi(snapshot):
    binding = FakeNvml(snapshot)
    devices = nvml.read_inventory(binding).devices
    # nvidia-smi -q -x of the idle device: used 0 MiB, free 81079 MiB, 0 %, 34 C
    assert nvml.read_health(binding, devices) == [
        DeviceHealth(index=0, memory_used_mb=0, memory_free_mb=81079, utilization_pct=0, temp_c=34)
    ]


def test_health_under_load_matches_nvidia_smi_free_memory(snapshot):
    load = json.loads((FIXTURES / "nvml-h100-under-load.json").read_text())
    binding = FakeNvml(snapshot, memory_v2=False, sample=load["samples"][-1])
    devices = nvml.read_inventory(FakeNvml(snapshot)).devices
    (reading,) = nvml.read_health(binding, devices)
    smi = load["nvidia_smi_csv_same_moment"].split(", ")
    # nvidia-smi (59627) and NVML (59626.0 MiB) were read a moment apart
    assert abs(reading.memory_free_mb - int(smi[5])) <= 1
    assert reading.utilization_pct == int(smi[6])  # 100 %
    assert reading.temp_c == int(smi[7])  # 57 C
    # without memory v2, "used" includes the driver's reserved memory (480 MiB here)
    assert abs(reading.memory_used_mb - int(smi[4]) - 480) <= 1


def test_a_reading_the_device_does_not_support_is_null(snapshot):
    binding = FakeNvml(snapshot, broken={"utilization"})
    (reading,) = nvml.read_health(binding, nvml.read_inventory(binding).devices)
    assert reading.utilization_pct is None
    assert reading.temp_c == 34


def test_start(snapshot):
    binding = FakeNvml(snapshot)
    assert nvml.start(binding) is None
    assert binding.initialised


def test_start_without_the_driver():
    class NoDriver(FakeNvml):
        def nvmlInit(self):
            raise self.NVMLError("NVML Shared Library Not Found")

    assert nvml.start(NoDriver({})) == "NVML: libnvidia-ml.so.1 not found"


def test_start_with_another_failure():
    class Broken(FakeNvml):
        def nvmlInit(self):
            raise self.NVMLError("Driver/library version mismatch")

    assert nvml.start(Broken({})) == "NVML: Driver/library version mismatch"


def test_start_without_gpus(snapshot):
    assert nvml.start(FakeNvml({**snapshot, "device_count": 0})) == "NVML: no NVIDIA GPU found"
