"""The vLLM harness without vLLM: it imports the engine module in a worker thread, warms it up
in the background, and a load that comes meanwhile waits for the warm-up."""

import asyncio
import sys
import time
import types
from typing import Any, cast

import pytest

from cortex_core.config import VllmOptions
from cortex_neuron import engine


class FakeModule:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.warmed = asyncio.Event()

    async def start(self, plan: Any) -> str:
        self.calls.append(("start", plan, self.warmed.is_set()))
        return "an engine"

    def warm(self, allow_download: bool, kind: str, spare_mb: int) -> None:
        time.sleep(0.2)  # long enough that a load not waiting for it would start first
        self.calls.append(("warm", allow_download, kind, spare_mb))
        self.warmed.set()

    def close(self) -> None:
        self.calls.append(("close",))


@pytest.fixture
def module(monkeypatch: pytest.MonkeyPatch) -> FakeModule:
    fake = FakeModule()
    imported: list[str] = []

    def import_module(name: str) -> Any:
        imported.append(name)
        assert name == "cortex_neuron.engine.vllm"
        return fake

    monkeypatch.setattr("cortex_neuron.engine.importlib.import_module", import_module)
    monkeypatch.delitem(sys.modules, "cortex_neuron.engine.vllm", raising=False)
    return fake


async def test_start_imports_the_engine_module_lazily(module: FakeModule) -> None:
    harness = engine.Vllm(VllmOptions())
    assert await harness.start(cast(Any, "plan")) == cast(Any, "an engine")
    assert module.calls == [("start", "plan", False)]


async def test_a_load_during_the_warm_up_waits_for_it(module: FakeModule) -> None:
    harness = engine.Vllm(VllmOptions(spare_memory_mb=1500))
    assert harness.memory_mb == 1500
    warming = asyncio.create_task(harness.warm("cpu"))
    await asyncio.sleep(0)  # the warm-up is under way when the load comes
    assert await harness.start(cast(Any, "plan")) == cast(Any, "an engine")
    await warming
    assert module.calls == [("warm", False, "cpu", 1500), ("start", "plan", True)]


async def test_close_stops_the_spare_only_once_vllm_was_imported(
    module: FakeModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = engine.Vllm(VllmOptions())
    await harness.close()  # nothing imported: nothing to stop, and nothing imported for it
    assert module.calls == []
    monkeypatch.setitem(sys.modules, "cortex_neuron.engine.vllm", cast(types.ModuleType, module))
    await harness.close()
    assert module.calls == [("close",)]
