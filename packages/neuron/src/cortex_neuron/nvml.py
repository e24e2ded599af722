"""Reading NVIDIA GPUs through NVML (nvidia-ml-py), and nothing else: never CUDA.

The functions take the NVML binding as an argument (the ``pynvml`` module in production, a fake
built from readings of a real H100 in tests), so the arithmetic is tested without a GPU.
Devices are identified by UUID: NVML's index is not CUDA's unless ``CUDA_DEVICE_ORDER`` is
``PCI_BUS_ID``. Memory comes from ``nvmlDeviceGetMemoryInfo_v2`` where the driver has it, so that
"used" excludes the driver's reserved memory, as ``nvidia-smi`` shows it.
"""

import logging
from collections.abc import Callable
from typing import Any

import msgspec

from cortex_core.wire.control import Device, DeviceHealth

__all__ = ["GpuInventory", "read_health", "read_inventory", "start"]

logger = logging.getLogger(__name__)

_MIB = 1024 * 1024


class GpuInventory(msgspec.Struct, kw_only=True, frozen=True):
    """What NVML says about the host's GPUs at start-up."""

    driver_version: str
    cuda_version: str
    devices: list[Device]


def start(nvml: Any) -> str | None:
    """Initialise NVML: ``None`` when GPUs can be read, else why they cannot."""
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        reason = "libnvidia-ml.so.1 not found" if "Not Found" in str(exc) else str(exc)
        return f"NVML: {reason}"
    if nvml.nvmlDeviceGetCount() == 0:
        return "NVML: no NVIDIA GPU found"
    return None


def read_inventory(nvml: Any) -> GpuInventory:
    """The host's GPUs, in NVML index order."""
    cuda = nvml.nvmlSystemGetCudaDriverVersion_v2()
    devices = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        devices.append(
            Device(
                index=index,
                kind="gpu",
                uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                name=_text(nvml.nvmlDeviceGetName(handle)),
                memory_total_mb=_mib(_memory(nvml, handle).total),
                compute_capability=f"{major}.{minor}",
            )
        )
    return GpuInventory(
        driver_version=_text(nvml.nvmlSystemGetDriverVersion()),
        cuda_version=f"{cuda // 1000}.{cuda % 1000 // 10}",
        devices=devices,
    )


def read_health(nvml: Any, devices: list[Device]) -> list[DeviceHealth]:
    """Memory, utilisation and temperature of each device now; a reading that fails is null."""
    readings = []
    for device in devices:
        handle = nvml.nvmlDeviceGetHandleByIndex(device.index)
        memory = _memory(nvml, handle)
        readings.append(
            DeviceHealth(
                index=device.index,
                memory_used_mb=_mib(memory.used),
                memory_free_mb=_mib(memory.free),
                utilization_pct=_optional(nvml, _utilization, handle),
                temp_c=_optional(nvml, _temperature, handle),
            )
        )
    return readings


def _memory(nvml: Any, handle: Any) -> Any:
    try:
        return nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
    except nvml.NVMLError:  # an older driver: v1 counts reserved memory as used
        return nvml.nvmlDeviceGetMemoryInfo(handle)


def _utilization(nvml: Any, handle: Any) -> int:
    return int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)


def _temperature(nvml: Any, handle: Any) -> int:
    return int(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))


def _optional(nvml: Any, read: Callable[[Any, Any], int], handle: Any) -> int | None:
    try:
        return read(nvml, handle)
    except nvml.NVMLError as exc:
        logger.debug("NVML reading failed: %s", exc)
        return None


def _mib(size: int) -> int:
    return round(size / _MIB)  # as nvidia-smi rounds


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
