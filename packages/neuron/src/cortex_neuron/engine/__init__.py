"""Inference engines behind the seam of :mod:`cortex_neuron.engine.base`.

:class:`Vllm` is the production harness. It imports vLLM (seconds, in a worker thread) in the
background from start-up, after the listener is up, and arms a warm spare when
``spare_memory_mb`` allows one; a load that comes first waits for the import. The neuron runs,
answers and is tested without vLLM installed: nothing imports it until then.
"""

import asyncio
import importlib
import sys
from types import ModuleType

from cortex_core.config import VllmOptions
from cortex_core.wire.control import DeviceKind
from cortex_neuron.engine.base import Engine, EnginePlan

__all__ = ["Vllm"]


class Vllm:
    """Starts vLLM engines (:meth:`start`, an ``EngineStarter``); readies vLLM ahead of them."""

    def __init__(self, options: VllmOptions) -> None:
        self._options = options
        self._warming: asyncio.Future[None] | None = None
        self.memory_mb = options.spare_memory_mb

    async def start(self, plan: EnginePlan) -> Engine:
        """Start a vLLM engine for ``plan`` (after the warm-up, when one is under way)."""
        if self._warming is not None:
            await asyncio.gather(asyncio.shield(self._warming), return_exceptions=True)
        engine: Engine = await (await _module()).start(plan)
        return engine

    async def warm(self, kind: DeviceKind) -> None:
        """Arm the spare (:mod:`cortex_neuron.engine.spare`) and import vLLM."""
        self._warming = asyncio.ensure_future(self._warm(kind))
        await asyncio.shield(self._warming)

    async def _warm(self, kind: DeviceKind) -> None:
        options = self._options
        module = await _module()
        await asyncio.to_thread(module.warm, options.allow_download, kind, options.spare_memory_mb)

    async def close(self) -> None:
        """Stop the spare (vLLM is not imported for it if no load or warm-up ever was)."""
        module = sys.modules.get("cortex_neuron.engine.vllm")
        if module is not None:
            await asyncio.to_thread(module.close)


async def _module() -> ModuleType:
    return await asyncio.to_thread(importlib.import_module, "cortex_neuron.engine.vllm")
