"""The lazy starter of the vLLM engine, without vLLM: it imports the engine module in a worker
thread the first time a model loads."""

import types
from typing import Any, cast

from cortex_neuron import engine


async def test_start_vllm_imports_the_engine_module_lazily(monkeypatch):
    started = []

    async def start(plan):
        started.append(plan)
        return "an engine"

    imported = []

    def import_module(name):
        imported.append(name)
        return types.SimpleNamespace(start=start)

    monkeypatch.setattr("cortex_neuron.engine.importlib.import_module", import_module)
    assert await engine.start_vllm(cast(Any, "plan")) == cast(Any, "an engine")
    assert imported == ["cortex_neuron.engine.vllm"]
    assert started == ["plan"]
