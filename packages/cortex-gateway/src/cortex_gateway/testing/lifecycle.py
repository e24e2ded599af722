"""The fake neuron's lifecycle: its models' states, loads, unloads and draining.

As the real neuron's (DESIGN §3): loads of one id share one load; a load reserves memory before
the engine starts and a failed one marks the model ``failed``; an unload during a load waits
for it; an unload with requests in flight is 409 ``model_busy`` unless it drains them (waits up
to ``drain_timeout_s``) or forces them (they end 503); memory is freed when the unload returns.
:class:`~cortex_gateway.testing.FakeNeuron` serves it over HTTP. Tests and benchmarks only.
"""

import asyncio
import time
from collections.abc import Iterable

from cortex_core.errors import (
    EngineFailedError,
    ErrorDetail,
    InvalidSpecError,
    ModelBusyError,
    ModelNotFoundError,
    ModelNotLoadedError,
    ServiceUnavailableError,
    ShuttingDownError,
    error_from_envelope,
)
from cortex_core.ids import check_model_id
from cortex_core.wire.control import ModelActivity, ModelInfo, ModelSpec, ModelStatus, UnloadRequest
from cortex_gateway.testing.memory import Memory
from cortex_gateway.testing.models import FakeModel

__all__ = ["FakeLifecycle"]


class FakeLifecycle:
    """The models of a fake neuron (see :class:`~cortex_gateway.testing.FakeNeuron`)."""

    def __init__(
        self,
        models: Iterable[str | FakeModel],
        *,
        loaded: Iterable[str],
        device_mb: int,
        devices: int,
        concurrency: int,
        max_queued: int,
        drain_timeout_s: float,
    ) -> None:
        self.models = {
            m.id: m for m in (m if isinstance(m, FakeModel) else FakeModel(m) for m in models)
        }
        self.memory = Memory(device_mb, devices)
        for model_id in loaded:
            model = self.models[model_id]
            model.memory_mb = model.memory_mb or 1000
            model.status, model.devices, model.loaded_at = "loaded", [0], time.time()
            self.memory.reserve([0], model.memory_mb)
        self.concurrency = concurrency
        self.max_queued = max_queued
        self.drain_timeout_s = drain_timeout_s
        self.load_time = 0.0
        """Seconds a load takes (a refused one too: the engine fails as it starts)."""
        self.unload_time = 0.0
        self.load_failures: dict[str, tuple[int, str]] = {}
        """Model id → (status, code) every load of it fails with, after :attr:`load_time`."""
        self.draining = False
        self.loads: list[ModelSpec] = []
        self.unloads: list[UnloadRequest] = []

    def activity(self) -> list[ModelActivity]:
        """``GET /health``'s models: requests running and waiting per model being served."""
        return [
            ModelActivity(
                id=m.id,
                in_flight=min(m.active, self.concurrency),
                queued=max(0, m.active - self.concurrency),
            )
            for m in self.models.values()
            if m.status in ("loaded", "unloading")
        ]

    async def drain(self, seconds: float) -> None:
        """Deactivate as on SIGTERM: refuse new work, let requests finish, end the rest."""
        self.draining = True
        refusal = ShuttingDownError("the neuron is shutting down", retry_after=5)
        serving = [m for m in self.models.values() if m.status in ("loaded", "unloading")]
        for model in serving:
            model.closed = model.closed or refusal
        await asyncio.gather(*(m.wait_idle(seconds) for m in serving))
        for model in serving:
            model.abort_all(refusal)

    def kill(self, model_id: str, reason: str = "the engine's process died") -> None:
        """The engine of ``model_id`` dies: the model fails, its requests end 503."""
        model = self.models[model_id]
        model.closed = ModelNotLoadedError(f"The model `{model_id}` is not loaded here.")
        model.abort_all(EngineFailedError(f"The engine serving `{model_id}` failed: {reason}"))
        self._release(model, "failed")
        model.error = reason

    def serving(self, model_id: str) -> FakeModel:
        """The loaded model that answers a request for ``model_id`` (the real one's errors)."""
        model = self.models.get(model_id)
        if model is None:
            raise ModelNotFoundError(f"The model `{model_id}` does not exist.", param="model")
        if model.status != "loaded":
            raise ModelNotLoadedError(f"The model `{model_id}` is not loaded here.", param="model")
        return model

    async def load(self, spec: ModelSpec) -> ModelInfo:
        """Load ``spec`` (or join the load under way); the model's entry once it serves.

        Raises:
            CortexError: the codes of DESIGN §3's table.
        """
        self.loads.append(spec)
        model_id = check_model_id(spec.model_id)
        if self.draining:
            raise ShuttingDownError("the neuron is shutting down", retry_after=5)
        while (model := self.models.get(model_id)) is not None and model.task is not None:
            joined = model.status == "loading"
            await asyncio.shield(model.task)  # a failed load raises here, for every joiner
            if joined:
                return model.info()
        if model is not None and model.status == "loaded":
            return model.info()
        if spec.harness != "vllm":
            raise InvalidSpecError(f"unknown harness {spec.harness!r}; this neuron runs vllm")
        if model is None:
            raise ModelNotFoundError(
                f"The model `{model_id}` is not in this host's model dirs or cache",
                param="model_id",
            )
        tensor_parallel = 1 if spec.tensor_parallel is None else spec.tensor_parallel
        memory_mb = spec.memory_mb
        if memory_mb is None:
            memory_mb = self.memory.default_mb(max(tensor_parallel, 1))
        for name, value in (("tensor_parallel", tensor_parallel), ("memory_mb", memory_mb)):
            if value < 1:
                raise InvalidSpecError(f"{name} must be positive, got {value}", param=name)
        devices = self.memory.choose(spec.devices, tensor_parallel, memory_mb)
        self.memory.reserve(devices, memory_mb)
        model.status, model.error, model.devices, model.memory_mb = (
            "loading",
            None,
            devices,
            memory_mb,
        )
        model.task = asyncio.create_task(self._start_engine(model, spec))
        await asyncio.shield(model.task)
        return model.info()

    async def _start_engine(self, model: FakeModel, spec: ModelSpec) -> None:
        try:
            # load_time is read as the load runs, so that a test may end a long load early
            started = time.monotonic()
            while time.monotonic() - started < self.load_time:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            refusal = self.load_failures.get(model.id)
            if refusal is not None:
                status, code = refusal
                detail = ErrorDetail(message=f"fake refusal: {code}", type="", code=code)
                failure = error_from_envelope(status, detail)
                self._release(model, "failed")
                model.error = failure.message
                raise failure
        finally:
            model.task = None
        model.status, model.closed = "loaded", None
        model.max_model_len = spec.max_model_len or model.max_model_len
        model.loaded_at = model.last_used = time.time()

    async def unload(self, unload: UnloadRequest) -> None:
        """Unload a model; returns once it is gone (and its memory free).

        Raises:
            ModelNotLoadedError: it is not loaded.
            ModelBusyError: it has requests in flight and neither ``drain`` nor ``force``.
        """
        self.unloads.append(unload)
        model_id = check_model_id(unload.model_id)
        model = self.models.get(model_id)
        if model is not None and model.status == "loading" and model.task is not None:
            await asyncio.gather(asyncio.shield(model.task), return_exceptions=True)
        if model is None or model.status not in ("loaded", "unloading"):
            raise ModelNotLoadedError(f"The model `{model_id}` is not loaded here.")
        if model.status == "loaded":
            if model.active and not (unload.drain or unload.force):
                raise ModelBusyError(
                    f"The model `{model_id}` has {model.active} requests in flight; "
                    "unload with drain or force"
                )
            model.status = "unloading"
            model.task = asyncio.create_task(self._stop_engine(model, force=unload.force))
        assert model.task is not None
        await asyncio.shield(model.task)

    async def _stop_engine(self, model: FakeModel, *, force: bool) -> None:
        try:
            model.closed = ModelNotLoadedError(f"The model `{model.id}` is being unloaded.")
            if force or not await model.wait_idle(self.drain_timeout_s):
                model.abort_all(
                    ServiceUnavailableError(f"The model `{model.id}` was unloaded.", retry_after=1)
                )
                await model.wait_idle(self.drain_timeout_s)
            await asyncio.sleep(self.unload_time)
        finally:
            self._release(model, "available")
            model.task = None

    def _release(self, model: FakeModel, status: ModelStatus) -> None:
        if model.memory_mb is not None:
            self.memory.release(model.devices, model.memory_mb)
        model.status, model.devices, model.memory_mb, model.loaded_at = status, [], None, None
