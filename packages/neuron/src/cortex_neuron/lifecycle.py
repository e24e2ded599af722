"""The models of this host and their lifecycle: the neuron's source of truth (DESIGN §3, §7).

available → loading → loaded → unloading → available; loading → failed → (load) → loading.

- Loads of one id share one load; a load while unloading waits for the unload, then loads. A
  load continues when the client that asked for it goes away (others may be waiting, and the
  gateway will ask again).
- Memory is reserved on the devices before an engine starts, and released when it is gone.
- An unload of a model with requests in flight is refused (409) unless it drains them (waits up
  to ``drain_timeout_s``) or forces them (aborts them).
- An engine that dies marks its model failed and ends its requests with 503 ``engine_failed``.

Every method answers at once or awaits an engine; none blocks the event loop.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec

from cortex_core.config import VllmOptions
from cortex_core.errors import (
    CortexError,
    EngineFailedError,
    InvalidSpecError,
    LoadFailedError,
    ModelBusyError,
    ModelNotFoundError,
    ModelNotLoadedError,
    ServiceUnavailableError,
    ShuttingDownError,
)
from cortex_core.ids import check_model_id
from cortex_core.wire.control import ModelActivity, ModelInfo, ModelSpec, ModelStatus, UnloadRequest
from cortex_neuron.admission import Gate
from cortex_neuron.devices import Devices
from cortex_neuron.engine.base import Engine, EnginePlan, EngineStarter
from cortex_neuron.engine_args import refused_args
from cortex_neuron.metrics import NeuronMetrics
from cortex_neuron.sources import ModelSources

__all__ = ["Lifecycle", "ModelState"]

logger = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
_MIN_KV_MB = 16  # below this a CPU engine cannot hold a single request's context


class ModelState:
    """One model this neuron knows, and where it is in its lifecycle."""

    def __init__(self, model_id: str) -> None:
        self.id = model_id
        self.status: ModelStatus = "available"
        self.engine: Engine | None = None
        self.gate: Gate | None = None
        self.devices: list[int] = []
        self.memory_mb: int | None = None
        self.max_model_len: int | None = None
        self.loaded_at: float | None = None
        self.last_used: float | None = None
        self.error: str | None = None
        self.task: asyncio.Task[None] | None = None

    def info(self) -> ModelInfo:
        """The ``GET /models`` entry."""
        return ModelInfo(
            id=self.id,
            status=self.status,
            devices=list(self.devices),
            memory_mb=self.memory_mb,
            max_model_len=self.max_model_len,
            loaded_at=self.loaded_at,
            last_used=self.last_used,
            in_flight=self.gate.active if self.gate else 0,
            error=self.error,
        )


class Lifecycle:
    """Loads, unloads and tracks every model of this host."""

    def __init__(
        self,
        options: VllmOptions,
        devices: Devices,
        starter: EngineStarter,
        metrics: NeuronMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._options = options
        self._devices = devices
        self._sources = ModelSources(options.model_dirs, options.hf_cache)
        self._starter = starter
        self._metrics = metrics
        self._clock = clock
        self._states: dict[str, ModelState] = {}
        self._scanned: dict[str, Path] = {}
        self._cleanups: set[asyncio.Task[None]] = set()
        self.draining = False

    async def rescan(self) -> None:
        """Look for models on disk again (in a worker thread)."""
        self._scanned = await asyncio.to_thread(self._sources.scan)

    def models(self) -> list[ModelInfo]:
        """Every model on disk or in the lifecycle, by id."""
        ids = sorted(self._scanned.keys() | self._states.keys())
        return [self._states[i].info() if i in self._states else ModelInfo(id=i) for i in ids]

    def activity(self) -> list[ModelActivity]:
        """Requests running and waiting per loaded model."""
        return [
            ModelActivity(id=s.id, in_flight=s.gate.in_flight, queued=s.gate.queued)
            for s in self._states.values()
            if s.gate is not None
        ]

    def states(self) -> list[ModelState]:
        """Every model in the lifecycle (for metrics)."""
        return list(self._states.values())

    def serving(self, model_id: str) -> ModelState:
        """The loaded model that answers a request for ``model_id``.

        Raises:
            ModelNotFoundError: this host does not know the model.
            ModelNotLoadedError: it knows it, but it is not loaded.
        """
        state = self._states.get(model_id)
        if state is not None and state.status == "loaded":
            return state
        if state is None and model_id not in self._scanned:
            raise ModelNotFoundError(f"The model `{model_id}` does not exist.", param="model")
        raise ModelNotLoadedError(f"The model `{model_id}` is not loaded here.", param="model")

    async def load(self, spec: ModelSpec) -> ModelInfo:
        """Load ``spec`` (or join the load under way); the model's entry once it serves.

        Raises:
            CortexError: the codes of DESIGN §3's table.
        """
        model_id = check_model_id(spec.model_id)
        if self.draining:
            raise ShuttingDownError("the neuron is shutting down", retry_after=5)
        while (state := self._states.get(model_id)) is not None and state.task is not None:
            joined = state.status == "loading"
            await asyncio.shield(state.task)  # a failed load raises here, for every joiner
            if joined:
                return state.info()
        if state is not None and state.status == "loaded":
            return state.info()
        plan = self._plan(spec)
        devices = self._devices.choose(spec.devices, plan.tensor_parallel, plan.memory_mb)
        chosen = [self._devices.devices[i] for i in devices]
        plan = msgspec.structs.replace(
            plan,
            device_uuids=tuple(d.uuid for d in chosen),
            device_memory_mb=tuple(d.memory_total_mb for d in chosen),
        )
        self._devices.reserve(devices, plan.memory_mb)
        state = self._states.setdefault(model_id, ModelState(model_id))
        state.status, state.error = "loading", None
        state.devices, state.memory_mb = devices, plan.memory_mb
        state.task = asyncio.create_task(self._load(state, plan))
        await asyncio.shield(state.task)
        return state.info()

    async def unload(self, request: UnloadRequest) -> None:
        """Unload a model; returns once its engine is gone.

        Raises:
            ModelNotLoadedError: it is not loaded.
            ModelBusyError: it has requests in flight and neither ``drain`` nor ``force``.
        """
        model_id = check_model_id(request.model_id)
        state = self._states.get(model_id)
        if state is not None and state.status == "loading" and state.task is not None:
            await asyncio.gather(asyncio.shield(state.task), return_exceptions=True)
        if state is None or state.status not in ("loaded", "unloading"):
            raise ModelNotLoadedError(f"The model `{model_id}` is not loaded here.")
        if state.status == "loaded":
            assert state.gate is not None
            if state.gate.active and not (request.drain or request.force):
                raise ModelBusyError(
                    f"The model `{model_id}` has {state.gate.active} requests in flight; "
                    "unload with drain or force"
                )
            state.status = "unloading"
            state.task = asyncio.create_task(self._unload(state, force=request.force))
        assert state.task is not None
        await asyncio.shield(state.task)

    def check_engines(self) -> None:
        """Mark models whose engine died as failed and end their requests."""
        for state in self._states.values():
            if state.status != "loaded" or state.engine is None:
                continue
            stats = state.engine.stats()
            if stats.alive:
                continue
            reason = stats.error or "the engine's process died"
            logger.error("engine of %s failed: %s", state.id, reason)
            self._metrics.engine_failures.labels(state.id).inc()
            assert state.gate is not None
            error = EngineFailedError(f"The engine serving `{state.id}` failed: {reason}")
            state.gate.close(ModelNotLoadedError(f"The model `{state.id}` is not loaded here."))
            state.gate.abort_all(error)
            engine = state.engine
            self._release(state, status="failed")
            state.error = reason
            self._background(engine.shutdown())

    async def drain(self, seconds: float) -> None:
        """Refuse new work, let requests in flight finish for up to ``seconds``, end the rest."""
        self.draining = True
        gates = [s.gate for s in self._states.values() if s.gate is not None]
        refusal = ShuttingDownError("the neuron is shutting down", retry_after=5)
        for gate in gates:
            gate.close(refusal)
        await asyncio.gather(*(g.wait_idle(seconds) for g in gates))
        for gate in gates:
            gate.abort_all(refusal)

    async def stop(self, seconds: float) -> None:
        """Shut every engine down in parallel, waiting at most ``seconds`` for them."""
        loads = [s.task for s in self._states.values() if s.task is not None]
        if loads:
            await asyncio.wait(loads, timeout=seconds)
        engines = [s.engine for s in self._states.values() if s.engine is not None]
        stops = [asyncio.ensure_future(e.shutdown()) for e in engines]
        stops += list(self._cleanups)
        if stops:
            _, pending = await asyncio.wait(stops, timeout=seconds)
            for task in pending:
                logger.error("an engine did not stop within %.0f s", seconds)
                task.cancel()

    def _plan(self, spec: ModelSpec) -> EnginePlan:
        model_id = spec.model_id
        if spec.harness != "vllm":
            raise InvalidSpecError(f"unknown harness {spec.harness!r}; this neuron runs vllm")
        path = self._sources.resolve(model_id)
        if path is None and not self._options.allow_download:
            raise ModelNotFoundError(
                f"The model `{model_id}` is not in this host's model dirs or cache",
                param="model_id",
            )
        args = {**self._options.engine_args, **spec.engine_args}
        refusal = refused_args(args, self._options)
        if refusal:
            raise InvalidSpecError(refusal, param="engine_args")
        tensor_parallel = 1 if spec.tensor_parallel is None else spec.tensor_parallel
        memory_mb = spec.memory_mb
        if memory_mb is None:
            memory_mb = self._devices.default_memory_mb(self._options, max(tensor_parallel, 1))
        for name, value in (
            ("tensor_parallel", tensor_parallel),
            ("memory_mb", memory_mb),
            ("max_model_len", 1 if spec.max_model_len is None else spec.max_model_len),
        ):
            if value < 1:
                raise InvalidSpecError(f"{name} must be positive, got {value}", param=name)
        weights = _weights_mb(path)
        if self._devices.kind == "cpu" and memory_mb < weights + _MIN_KV_MB:
            raise InvalidSpecError(
                f"memory_mb {memory_mb} cannot hold the weights ({weights} MiB) and a KV cache "
                f"of at least {_MIN_KV_MB} MiB",
                param="memory_mb",
            )
        return EnginePlan(
            model_id=model_id,
            path=path,
            memory_mb=memory_mb,
            weights_mb=weights,
            device_kind=self._devices.kind,
            device_uuids=(),
            device_memory_mb=(),
            tensor_parallel=tensor_parallel,
            max_model_len=spec.max_model_len,
            quant=spec.quant,
            tool_call_parser=spec.tool_call_parser or None,
            reasoning_parser=spec.reasoning_parser or None,
            chat_template=spec.chat_template or None,
            engine_args=args,
            allow_download=self._options.allow_download,
        )

    async def _load(self, state: ModelState, plan: EnginePlan) -> None:
        started = time.monotonic()
        try:
            engine = await self._starter(plan)
        except BaseException as exc:
            error = exc if isinstance(exc, CortexError) else LoadFailedError(str(exc))
            if not isinstance(exc, CortexError | asyncio.CancelledError):
                logger.exception("loading %s failed", state.id)
            self._release(state, status="failed")
            state.error = error.message
            self._metrics.loads.labels(state.id, error.code).inc()
            if isinstance(exc, CortexError | asyncio.CancelledError):
                raise
            raise error from exc
        finally:
            state.task = None
        seconds = time.monotonic() - started
        state.status, state.engine = "loaded", engine
        state.max_model_len = engine.max_model_len
        state.loaded_at = state.last_used = self._clock()
        state.gate = Gate(
            engine.max_concurrency, self._options.max_queued_per_model, lambda: self._used(state)
        )
        self._metrics.loads.labels(state.id, "ok").inc()
        self._metrics.load_seconds.labels(state.id).observe(seconds)
        for phase, phase_seconds in engine.load_phases.items():
            self._metrics.load_phase_seconds.labels(state.id, phase).observe(phase_seconds)
        logger.info("loaded %s in %.1f s", state.id, seconds)

    async def _unload(self, state: ModelState, *, force: bool) -> None:
        gate, engine = state.gate, state.engine
        assert gate is not None
        assert engine is not None
        try:
            gate.close(ModelNotLoadedError(f"The model `{state.id}` is being unloaded."))
            if force or not await gate.wait_idle(self._options.drain_timeout_s):
                gate.abort_all(
                    ServiceUnavailableError(f"The model `{state.id}` was unloaded.", retry_after=1)
                )
                await gate.wait_idle(self._options.drain_timeout_s)
            await engine.shutdown()
        finally:
            self._release(state, status="available")
            state.task = None
        self._metrics.unloads.labels(state.id).inc()
        logger.info("unloaded %s", state.id)

    def _release(self, state: ModelState, *, status: ModelStatus) -> None:
        if state.memory_mb is not None:
            self._devices.release(state.devices, state.memory_mb)
        state.status, state.engine, state.gate = status, None, None
        state.devices, state.memory_mb, state.loaded_at = [], None, None
        state.max_model_len = None  # unknown until the next load (DESIGN §3: null)

    def _used(self, state: ModelState) -> None:
        state.last_used = self._clock()

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)


def _weights_mb(path: Path | None) -> int:
    if path is None:
        return 0
    size = sum(f.stat().st_size for f in path.iterdir() if f.name.endswith(_WEIGHT_SUFFIXES))
    return -(-size // (1024 * 1024))
