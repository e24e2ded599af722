"""Inference engines behind the seam of :mod:`cortex_neuron.engine.base`.

:func:`start_vllm` is the production starter; it imports vLLM (seconds, in a worker thread) the
first time a model loads, so the neuron runs, answers and is tested without vLLM installed.
"""

import asyncio
import importlib

from cortex_neuron.engine.base import Engine, EnginePlan

__all__ = ["start_vllm"]


async def start_vllm(plan: EnginePlan) -> Engine:
    """Start a vLLM engine for ``plan`` (an :data:`~cortex_neuron.engine.base.EngineStarter`)."""
    module = await asyncio.to_thread(importlib.import_module, "cortex_neuron.engine.vllm")
    engine: Engine = await module.start(plan)
    return engine
