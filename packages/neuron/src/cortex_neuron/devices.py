"""The host's memory pools: what ``/discovery`` reports, cached health readings, reservations.

A device is a memory pool: an NVIDIA GPU found through NVML, or, on a host without one, the one
CPU pool of vLLM's CPU build (``[harness.vllm] cpu_memory_mb``). Loads reserve memory here
before their engine starts, so that two loads never count the same free memory; a model's
memory is released when its engine is gone.

Readings are refreshed by :meth:`Devices.refresh`, which blocks on NVML and so runs in a worker
thread; every reader gets the cached values at once.
"""

import logging
import os
import platform
import socket
from typing import Any

import msgspec

from cortex_core.config import VllmOptions
from cortex_core.errors import InvalidSpecError, OutOfMemoryError
from cortex_core.wire.control import Device, DeviceHealth, DeviceKind, Discovery
from cortex_neuron import __version__, nvml

__all__ = ["Devices"]

logger = logging.getLogger(__name__)

_MIB = 1024 * 1024
_DEFAULT_SHARE = 0.9  # of a device, for a load that names no memory_mb and no default


class Devices:
    """The host's devices and the neuron's own accounting of their memory."""

    def __init__(self, discovery: Discovery, binding: Any = None) -> None:
        self.discovery = discovery
        self.devices = discovery.devices
        self.kind: DeviceKind = self.devices[0].kind
        self._nvml = binding
        self._reserved = {d.index: 0 for d in self.devices}
        self._readings: dict[int, DeviceHealth] = {}
        self.refresh()

    @classmethod
    def probe(cls, options: VllmOptions, binding: Any = None, spare_mb: int = 0) -> "Devices":
        """Find the host's GPUs through NVML (``binding``: the pynvml module or a fake).

        Without a usable GPU the one device is the CPU pool, and ``gpu_unavailable_reason`` says
        why. The pool is ``cpu_memory_mb``, else half the host's memory less ``spare_mb``, the
        host memory the engine's warm spare may hold.
        """
        if binding is None:
            import pynvml

            binding = pynvml
        reason = nvml.start(binding)
        host = Discovery(
            hostname=socket.gethostname(),
            os=platform.system(),
            kernel=platform.release(),
            version=__version__,
            harnesses=["vllm"],
            spare_memory_mb=spare_mb,
        )
        if reason is not None:
            cpu = Device(
                index=0,
                kind="cpu",
                uuid="cpu",
                name="CPU (vLLM CPU build)",
                memory_total_mb=options.cpu_memory_mb or max(_half_of_ram_mb() - spare_mb, 0),
            )
            return cls(msgspec.structs.replace(host, devices=[cpu], gpu_unavailable_reason=reason))
        inventory = nvml.read_inventory(binding)
        discovery = msgspec.structs.replace(
            host,
            cuda_version=inventory.cuda_version,
            driver_version=inventory.driver_version,
            devices=inventory.devices,
        )
        return cls(discovery, binding)

    def refresh(self) -> None:
        """Read the devices now (blocking on NVML; call it from a worker thread)."""
        if self._nvml is None:
            return
        try:
            readings = nvml.read_health(self._nvml, self.devices)
        except self._nvml.NVMLError as exc:
            logger.warning("reading the GPUs failed, keeping the last readings: %s", exc)
            return
        self._readings = {r.index: r for r in readings}

    def health(self) -> list[DeviceHealth]:
        """The latest readings; for the CPU pool, the neuron's own accounting."""
        if self._nvml is None:
            return [
                DeviceHealth(
                    index=d.index,
                    memory_used_mb=self._reserved[d.index],
                    memory_free_mb=d.memory_total_mb - self._reserved[d.index],
                )
                for d in self.devices
            ]
        return [self._readings[d.index] for d in self.devices]

    def available_mb(self, index: int) -> int:
        """Memory a new engine may take on device ``index`` now.

        What the neuron has not reserved, and on a GPU also no more than NVML sees free (other
        processes use GPUs too; an engine still starting has not allocated yet).
        """
        device = self.devices[index]
        unreserved = device.memory_total_mb - self._reserved[index]
        reading = self._readings.get(index)
        return unreserved if reading is None else min(unreserved, reading.memory_free_mb)

    def default_memory_mb(self, options: VllmOptions, count: int) -> int:
        """A load's budget when it names none: ``default_memory_mb``, else 90 % of its devices."""
        if options.default_memory_mb:
            return options.default_memory_mb
        return int(min(d.memory_total_mb for d in self.devices) * _DEFAULT_SHARE) * count

    def choose(self, wanted: list[int] | None, count: int, memory_mb: int) -> list[int]:
        """Pick ``count`` devices that each have ``memory_mb / count`` available.

        Raises:
            InvalidSpecError: ``wanted`` names devices this host lacks, or not ``count`` of them.
            OutOfMemoryError: the memory is not free now.
        """
        known = {d.index for d in self.devices}
        if self.kind == "cpu":
            count = 1
        if wanted is not None and (len(wanted) != count or not set(wanted) <= known):
            raise InvalidSpecError(
                f"devices {wanted} must be {count} distinct indices of this host's {sorted(known)}",
                param="devices",
            )
        if count > len(known):
            raise InvalidSpecError(
                f"tensor_parallel {count} needs {count} devices; this host has {len(known)}",
                param="tensor_parallel",
            )
        share = -(-memory_mb // count)
        candidates = wanted or sorted(known, key=self.available_mb, reverse=True)[:count]
        short = [i for i in candidates if self.available_mb(i) < share]
        if short:
            free = ", ".join(f"device {i}: {self.available_mb(i)} MiB" for i in short)
            raise OutOfMemoryError(
                f"{memory_mb} MiB does not fit now ({share} MiB per device; available {free})"
            )
        return sorted(candidates)

    def reserve(self, indices: list[int], memory_mb: int) -> None:
        """Count ``memory_mb`` (split evenly) as taken on ``indices``."""
        for index in indices:
            self._reserved[index] += -(-memory_mb // len(indices))

    def release(self, indices: list[int], memory_mb: int) -> None:
        """Undo :meth:`reserve`."""
        for index in indices:
            self._reserved[index] -= -(-memory_mb // len(indices))


def _half_of_ram_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // _MIB // 2
