"""Loads and unloads on neurons: one load at a time per (node, model), shared by every waiter.

A load runs in its own task, shielded from its waiters: a client that gives up does not cancel
a load that others wait on (DESIGN §7.1). After a load the model's inference endpoint is
resolved once and kept. The spec sent is built from models.toml (:func:`load_spec`). This module
does not choose nodes: :mod:`~cortex_gateway.control.routing` applies placement's decisions.
"""

import asyncio
import logging
import time
from functools import partial
from pathlib import Path

import msgspec

from cortex_core.config import ConfigError, ModelProfile, ModelsConfig
from cortex_core.wire.control import (
    EndpointResponse,
    Health,
    LoadResponse,
    ModelSpec,
    UnloadRequest,
    UnloadResponse,
)
from cortex_gateway.fleet.node import Node, Reservation
from cortex_gateway.metrics import Metrics
from cortex_gateway.placement.snapshot import Need
from cortex_gateway.upstream import Upstream
from cortex_gateway.web.recent import Recent

__all__ = ["CONTROL_TIMEOUT_S", "Lifecycle", "load_spec", "read_templates"]

logger = logging.getLogger(__name__)

CONTROL_TIMEOUT_S = 10.0
"""Bound on the neuron's quick lifecycle calls (the endpoint of a loaded model, health)."""

FREE_WAIT_S = 30.0
"""After evictions, how long a load waits for the node to report the memory free."""


def read_templates(models: ModelsConfig, source: str = "models.toml") -> dict[str, str]:
    """The text of every ``chat_template`` file models.toml names, read once at start-up.

    Raises:
        ConfigError: a template file cannot be read.
    """
    templates = {}
    for i, profile in enumerate(models.models):
        if profile.chat_template:
            try:
                templates[profile.id] = Path(profile.chat_template).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    source,
                    f"cannot read chat template {profile.chat_template}: {exc}",
                    f"models[{i}].chat_template",
                ) from exc
    return templates


def load_spec(
    model_id: str,
    profile: ModelProfile | None,
    template: str | None,
    devices: tuple[int, ...] | None,
) -> ModelSpec:
    """The ``POST /models/load`` body: models.toml's settings ("" and 1 mean unset)."""
    device_list = list(devices) if devices else None
    if profile is None:
        return ModelSpec(model_id=model_id, devices=device_list)
    return ModelSpec(
        model_id=model_id,
        harness=profile.harness,
        memory_mb=profile.vram_mb,
        devices=device_list,
        tensor_parallel=profile.min_devices if profile.min_devices > 1 else None,
        max_model_len=profile.max_model_len,
        tool_call_parser=profile.tool_call_parser or None,
        reasoning_parser=profile.reasoning_parser or None,
        chat_template=template,
        engine_args=dict(profile.engine_args),
    )


class Lifecycle:
    """Single-flight loads, endpoint look-ups and unloads through an :class:`Upstream`."""

    def __init__(
        self,
        upstream: Upstream,
        metrics: Metrics,
        *,
        load_timeout: float,
        recent: Recent | None = None,
    ) -> None:
        self._upstream = upstream
        self._recent = recent or Recent()  # what the status page shows
        self._metrics = metrics
        self._load_timeout = load_timeout
        self._loads: dict[tuple[str, str], asyncio.Task[str]] = {}

    def loads_on(self, node: Node) -> set[str]:
        """The models this gateway is loading on ``node``."""
        return {model for name, model in self._loads if name == node.name}

    async def load(
        self,
        node: Node,
        spec: ModelSpec,
        need: Need,
        evict: tuple[str, ...] = (),
        reason: str = "lru",
    ) -> str:
        """Load ``spec`` on ``node``, or join the load under way; returns the endpoint URL.

        ``evict`` are unloaded there first, all at once (``reason`` labels the evictions).

        Raises:
            ModelBusyError: a model to evict had requests after all (the decision was stale:
                decide again, never force).
            CortexError: the neuron's refusal (rebuilt from its code) or a remote fault; every
                waiter of one load gets the same error.
        """
        key = (node.name, spec.model_id)
        task = self._loads.get(key)
        if task is None:
            # Reserved now, not when the task starts: a placement in between must see it.
            reservation = None
            if spec.devices and need.mb_per_device:
                reservation = Reservation(
                    tuple(spec.devices), need.mb_per_device, model=spec.model_id
                )
                node.reservations.append(reservation)
            task = asyncio.create_task(self._load(node, spec, reservation, evict, reason))
            self._loads[key] = task
            task.add_done_callback(partial(self._forget, key))
        return await asyncio.shield(task)

    def _forget(self, key: tuple[str, str], task: "asyncio.Task[str]") -> None:
        del self._loads[key]
        if not task.cancelled():
            task.exception()  # every waiter may have left; the error is theirs, not the loop's

    async def _load(
        self,
        node: Node,
        spec: ModelSpec,
        reservation: Reservation | None,
        evict: tuple[str, ...],
        reason: str,
    ) -> str:
        started = time.perf_counter()
        try:
            if evict:
                await self._evict(node, evict, reason)
                if reservation is not None:
                    await self._until_free(node, reservation)
            logger.info("loading %s on %s", spec.model_id, node.name)
            answer = await self._upstream.post(
                node.peer, "/models/load", spec, LoadResponse, limit_s=self._load_timeout
            )
            url = await self._fetch_endpoint(node, spec.model_id)
        except BaseException as exc:
            if reservation is not None:
                node.reservations.remove(reservation)
            logger.warning("loading %s on %s failed: %s", spec.model_id, node.name, exc)
            failed_after = time.perf_counter() - started
            why = str(getattr(exc, "code", type(exc).__name__))
            self._recent.load_failed(spec.model_id, node.name, failed_after, why)
            raise
        if reservation is not None:
            reservation.done_at = time.monotonic()
        seconds = time.perf_counter() - started
        self._metrics.cold_starts.labels(spec.model_id, node.name).inc()
        self._metrics.model_load.labels(spec.model_id, node.name).observe(seconds)
        self._record(node, node.set_model(answer.model, url))
        node.resident(spec.model_id).load_seconds = seconds
        self._recent.loaded(spec.model_id, node.name, seconds)
        logger.info("loaded %s on %s in %.1f s", spec.model_id, node.name, seconds)
        return url

    async def endpoint(self, node: Node, model_id: str) -> str:
        """Where ``model_id`` is served on ``node``: kept from its load, else asked once."""
        resident = node.resident(model_id)
        if resident.endpoint is None:
            resident.endpoint = await self._fetch_endpoint(node, model_id)
        return resident.endpoint

    async def _fetch_endpoint(self, node: Node, model_id: str) -> str:
        answer = await self._upstream.get(
            node.peer, f"/models/{model_id}/endpoint", EndpointResponse, limit_s=CONTROL_TIMEOUT_S
        )
        return answer.url.rstrip("/")

    async def _evict(self, node: Node, models: tuple[str, ...], reason: str) -> None:
        """Unload every model of ``models`` on ``node`` at once; all must be idle."""
        logger.info("evicting %s from %s (%s)", ", ".join(models), node.name, reason)
        results = await asyncio.gather(
            *(self.unload(node, m, force=False, reason=reason) for m in models),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _until_free(self, node: Node, reservation: Reservation) -> None:
        """Wait (bounded) until the node reports the memory the evictions freed."""
        deadline = time.monotonic() + FREE_WAIT_S
        while time.monotonic() < deadline:
            await self.refresh(node)
            assert node.health is not None
            free = {d.index: d.memory_free_mb for d in node.health.devices}
            if all(free.get(i, 0) >= reservation.mb_per_device for i in reservation.devices):
                return
            await asyncio.sleep(0.1)
        logger.warning("node %s still reports too little free memory; loading anyway", node.name)

    async def refresh(self, node: Node) -> None:
        """Read the node's ``/health`` now (its devices' memory), ahead of the next poll."""
        health = await self._upstream.get(node.peer, "/health", Health, limit_s=CONTROL_TIMEOUT_S)
        node.health = health

    async def unload(
        self, node: Node, model_id: str, *, force: bool, reason: str, drain: bool = False
    ) -> None:
        """Unload ``model_id`` from ``node``.

        ``force`` aborts its requests in flight; ``drain`` has the neuron wait for them.

        Raises:
            CortexError: the neuron's refusal (409 ``model_busy``, 404 ``model_not_loaded``).
        """
        resident = node.resident(model_id)
        resident.unloading = True  # placement sends it nothing more meanwhile
        try:
            await self._upstream.post(
                node.peer,
                "/models/unload",
                UnloadRequest(model_id=model_id, force=force, drain=drain),
                UnloadResponse,
                limit_s=self._load_timeout,
            )
        finally:
            resident.unloading = False
        info = node.info(model_id)
        if info is not None:
            unloaded = msgspec.structs.replace(info, status="available", devices=[], in_flight=0)
            self._record(node, node.set_model(unloaded))
        self._metrics.evictions.labels(node.name, reason).inc()
        self._recent.unloaded(model_id, node.name, reason)
        logger.info("unloaded %s from %s (%s)", model_id, node.name, reason)

    def forget(self, node: Node, model_id: str) -> None:
        """The neuron said ``model_id`` is not loaded (a race with an unload): believe it."""
        info = node.info(model_id)
        if info is not None and info.status == "loaded":
            self._record(node, node.set_model(msgspec.structs.replace(info, status="available")))

    def _record(self, node: Node, cycles: int) -> None:
        self._metrics.record_cycles(node.name, cycles, node.defrag_due)

    def cancel(self) -> None:
        """Stop every load under way (the gateway is shutting down)."""
        for task in self._loads.values():
            task.cancel()
