"""On a host with NVIDIA GPUs (opt-in: `nox -s gpu`): the neuron's NVML discovery and health
against what `nvidia-smi` reports for the same devices."""

import subprocess

import pytest

from cortex_core.config import VllmOptions
from cortex_neuron.devices import Devices

pytestmark = pytest.mark.gpu


def nvidia_smi() -> list[list[str]]:
    out = subprocess.run(
        [
            "nvidia-smi",
            "--query-gpu=index,uuid,name,memory.total,memory.free",
            "--format=csv,noheader,nounits",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [[field.strip() for field in line.split(",")] for line in out.strip().splitlines()]


def test_discovery_and_health_agree_with_nvidia_smi() -> None:
    devices = Devices.probe(VllmOptions())
    assert devices.kind == "gpu"
    assert devices.discovery.gpu_unavailable_reason is None
    smi = nvidia_smi()
    assert [d.uuid for d in devices.devices] == [row[1] for row in smi]
    assert [d.name for d in devices.devices] == [row[2] for row in smi]
    assert [d.memory_total_mb for d in devices.devices] == [int(row[3]) for row in smi]
    for reading, row in zip(devices.health(), smi, strict=True):
        assert abs(reading.memory_free_mb - int(row[4])) <= 64  # read a moment apart
