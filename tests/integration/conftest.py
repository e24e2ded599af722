"""Fixtures of the integration tests: `target`, one neuron under DESIGN §3, run once as the real
neuron (its fake engine, in this process) and once as the gateway's double, with the faults a
test may inject into either."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cortex_core.config import HarnessOptions, NeuronConfig, VllmOptions
from cortex_core.errors import ErrorDetail, error_from_envelope
from cortex_gateway.testing import FakeNeuron
from cortex_neuron.app import build_context, create_app
from cortex_neuron.context import AppContext
from cortex_neuron.engine.fake import FakeStarter
from cortex_neuron.testing import fake_model, serving

TOKEN = "s3cret"
DEVICE_MB = 1000


class NoGpu:
    class NVMLError(Exception):
        pass

    def nvmlInit(self) -> None:
        raise self.NVMLError("NVML Shared Library Not Found")


class Target:
    """One neuron under the contract, and the faults a test may inject into it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.AsyncClient(
            base_url=url, timeout=20, headers={"Authorization": f"Bearer {TOKEN}"}
        )

    def slow_loads(self, seconds: float) -> None:
        raise NotImplementedError

    def fail_loads(self, model_id: str, status: int, code: str) -> None:
        raise NotImplementedError

    def slow_answers(self, seconds: float) -> None:
        raise NotImplementedError

    def kill(self, model_id: str) -> None:
        raise NotImplementedError

    def drain(self) -> "asyncio.Task[None]":
        raise NotImplementedError

    def heal_loads(self) -> None:
        raise NotImplementedError

    def loads(self) -> int:
        """Loads that reached the engine starter."""
        raise NotImplementedError


class RealNeuron(Target):
    def __init__(self, url: str, ctx: AppContext, starter: FakeStarter) -> None:
        super().__init__(url)
        self.ctx, self.starter = ctx, starter

    def slow_loads(self, seconds: float) -> None:
        self.starter.load_delay = seconds

    def fail_loads(self, model_id: str, status: int, code: str) -> None:
        detail = ErrorDetail(message=f"refused: {code}", type="", code=code)
        self.starter.fail = error_from_envelope(status, detail)

    def slow_answers(self, seconds: float) -> None:
        self.starter.engine_options["first_token_delay"] = seconds

    def kill(self, model_id: str) -> None:
        self.starter.engines[model_id].kill()
        self.ctx.lifecycle.check_engines()

    def drain(self) -> "asyncio.Task[None]":
        return asyncio.create_task(self.ctx.lifecycle.drain(5))

    def heal_loads(self) -> None:
        self.starter.fail = None

    def loads(self) -> int:
        return len(self.starter.plans)


class Double(Target):
    def __init__(self, neuron: FakeNeuron) -> None:
        super().__init__(neuron.url)
        self.neuron = neuron

    def slow_loads(self, seconds: float) -> None:
        self.neuron.load_time = seconds

    def fail_loads(self, model_id: str, status: int, code: str) -> None:
        self.neuron.load_failures[model_id] = (status, code)

    def slow_answers(self, seconds: float) -> None:
        self.neuron.latency = seconds

    def kill(self, model_id: str) -> None:
        self.neuron.kill(model_id)

    def drain(self) -> "asyncio.Task[None]":
        return asyncio.create_task(self.neuron.drain(5))

    def heal_loads(self) -> None:
        self.neuron.load_failures.clear()

    def loads(self) -> int:
        return len([s for s in self.neuron.loads if s.model_id in self.neuron.models])


@pytest.fixture(params=["neuron", "double"])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    made: Target
    if request.param == "neuron":
        for model_id in ("org/a", "org/b"):
            fake_model(tmp_path, model_id)
        options = VllmOptions(
            model_dirs=(str(tmp_path),),
            cpu_memory_mb=DEVICE_MB,
            max_queued_per_model=1,
            drain_timeout_s=5,
        )
        config = NeuronConfig(harness=HarnessOptions(vllm=options), auth_token=TOKEN)
        starter = FakeStarter(concurrency=1)
        ctx = build_context(config, starter, nvml=NoGpu())
        async with serving(create_app(ctx)) as url:
            made = RealNeuron(url, ctx, starter)
            async with made.http:
                yield made
    else:
        fake = FakeNeuron(
            ["org/a", "org/b"],
            device_mb=DEVICE_MB,
            token=TOKEN,
            concurrency=1,
            max_queued=1,
            drain_timeout_s=5,
        )
        async with fake:
            made = Double(fake)
            async with made.http:
                yield made
