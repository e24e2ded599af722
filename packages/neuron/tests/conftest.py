from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from cortex_core.config import HarnessOptions, NeuronConfig, VllmOptions
from cortex_neuron.app import build_context, create_app
from cortex_neuron.context import AppContext
from cortex_neuron.engine.fake import FakeStarter
from cortex_neuron.testing import fake_model, serving


class NoGpu:
    """An NVML binding on a host without the NVIDIA driver."""

    class NVMLError(Exception):
        pass

    def nvmlInit(self) -> None:
        raise self.NVMLError("NVML Shared Library Not Found")


class Neuron:
    """A neuron served on loopback for one test."""

    def __init__(self, url: str, ctx: AppContext, starter: FakeStarter) -> None:
        self.url = url
        self.ctx = ctx
        self.starter = starter
        self.http = httpx.AsyncClient(base_url=url, timeout=30)

    async def load(self, model_id: str = "org/alpha", **spec: Any) -> httpx.Response:
        return await self.http.post("/models/load", json={"model_id": model_id, **spec})

    async def models(self) -> dict[str, dict[str, Any]]:
        return {m["id"]: m for m in (await self.http.get("/models")).json()}


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    fake_model(root, "org/alpha")
    fake_model(root, "beta", weights_mb=2)
    return root


@pytest.fixture
def options(model_dir: Path, tmp_path: Path) -> VllmOptions:
    return VllmOptions(
        model_dirs=(str(model_dir),),
        hf_cache=str(tmp_path / "hf"),
        cpu_memory_mb=1000,
        max_queued_per_model=2,
        drain_timeout_s=5,
    )


@pytest.fixture
def starter() -> FakeStarter:
    return FakeStarter()


NeuronFactory = Callable[..., AbstractAsyncContextManager[Neuron]]


@pytest.fixture
def make_neuron(options: VllmOptions, starter: FakeStarter) -> NeuronFactory:
    @asynccontextmanager
    async def make(*, starter_: FakeStarter | None = None, **config: Any) -> AsyncIterator[Neuron]:
        used = starter_ or starter
        neuron_config = NeuronConfig(**{"harness": HarnessOptions(vllm=options), **config})
        ctx = build_context(neuron_config, used, nvml=NoGpu())
        async with serving(create_app(ctx)) as url:
            neuron = Neuron(url, ctx, used)
            try:
                yield neuron
            finally:
                await neuron.http.aclose()

    return make


@pytest.fixture
async def neuron(make_neuron: NeuronFactory) -> AsyncIterator[Neuron]:
    async with make_neuron() as running:
        yield running
