"""The fake neuron's devices: GPU-like memory pools, reserved on load and freed on unload.

As the real neuron accounts (DESIGN §3): a load reserves its ``memory_mb`` (split evenly over
its devices) before the engine starts, a load that does not fit now is 507 ``out_of_memory``, a
load that names no ``memory_mb`` takes 90 % of its devices, and an unload frees the memory only
when it returns. Tests and benchmarks only.
"""

from cortex_core.errors import InvalidSpecError, OutOfMemoryError
from cortex_core.wire.control import Device, DeviceHealth

__all__ = ["DEFAULT_SHARE", "Memory"]

DEFAULT_SHARE = 0.9
"""The share of each device a load without ``memory_mb`` takes, as the real neuron's."""


class Memory:
    """``devices`` GPUs of ``device_mb`` MiB each."""

    def __init__(self, device_mb: int, devices: int) -> None:
        self.total = [device_mb] * devices
        self.reserved = [0] * devices

    def devices(self) -> list[Device]:
        """``GET /discovery``'s devices."""
        return [
            Device(index=i, kind="gpu", uuid=f"GPU-{i}", name="Fake GPU", memory_total_mb=mb)
            for i, mb in enumerate(self.total)
        ]

    def health(self) -> list[DeviceHealth]:
        """``GET /health``'s devices: what is reserved, and what is left."""
        return [
            DeviceHealth(
                index=i,
                memory_used_mb=self.reserved[i],
                memory_free_mb=mb - self.reserved[i],
                utilization_pct=10,
                temp_c=40,
            )
            for i, mb in enumerate(self.total)
        ]

    def default_mb(self, count: int) -> int:
        """A load's budget when it names none: 90 % of its devices."""
        return int(min(self.total) * DEFAULT_SHARE) * count

    def choose(self, wanted: list[int] | None, count: int, memory_mb: int) -> list[int]:
        """``count`` devices that each have ``memory_mb / count`` free.

        Raises:
            InvalidSpecError: ``wanted`` is not ``count`` of this host's devices.
            OutOfMemoryError: the memory is not free now.
        """
        known = set(range(len(self.total)))
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
        candidates = wanted or sorted(known, key=self._free, reverse=True)[:count]
        short = [i for i in candidates if self._free(i) < share]
        if short:
            raise OutOfMemoryError(
                f"{memory_mb} MiB do not fit: devices {short} have less than {share} MiB free"
            )
        return sorted(candidates)

    def reserve(self, indices: list[int], memory_mb: int) -> None:
        """Count ``memory_mb`` (split evenly) as taken on ``indices``."""
        for index in indices:
            self.reserved[index] += -(-memory_mb // len(indices))

    def release(self, indices: list[int], memory_mb: int) -> None:
        """Undo :meth:`reserve`."""
        for index in indices:
            self.reserved[index] -= -(-memory_mb // len(indices))

    def _free(self, index: int) -> int:
        return self.total[index] - self.reserved[index]
