"""The gateway in front of the real neuron code (its fake engine), both in this process: the
contract of DESIGN §3 as the two actually speak it, without vLLM."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import openai
import pytest

from cortex_core.config import (
    GatewayConfig,
    GatewayOptions,
    HarnessOptions,
    ModelProfile,
    ModelsConfig,
    NeuronConfig,
    NeuronPeer,
    VllmOptions,
)
from cortex_gateway.testing import running_gateway, scrape
from cortex_neuron.app import build_context, create_app
from cortex_neuron.context import AppContext
from cortex_neuron.engine.fake import FakeStarter
from cortex_neuron.testing import fake_model, serving

pytestmark = pytest.mark.timeout(60)


class NoGpu:
    class NVMLError(Exception):
        pass

    def nvmlInit(self) -> None:
        raise self.NVMLError("NVML Shared Library Not Found")


@pytest.fixture
async def neuron(tmp_path: Path) -> AsyncIterator[tuple[str, AppContext, FakeStarter]]:
    fake_model(tmp_path, "org/tiny")
    fake_model(tmp_path, "org/other")
    options = VllmOptions(model_dirs=(str(tmp_path),), cpu_memory_mb=1000)
    starter = FakeStarter(load_delay=0.2)
    ctx = build_context(NeuronConfig(harness=HarnessOptions(vllm=options)), starter, nvml=NoGpu())
    async with serving(create_app(ctx)) as url:
        yield url, ctx, starter


def gateway_config(url: str) -> GatewayConfig:
    return GatewayConfig(
        gateway=GatewayOptions(poll_interval_s=0.05),
        neurons=(NeuronPeer(name="box", endpoint=url),),
    )


MODELS = ModelsConfig(
    models=(ModelProfile(id="org/tiny", vram_mb=300, max_model_len=256, aliases=("tiny",)),)
)


async def test_a_cold_request_loads_through_the_neuron_then_streams(neuron):
    url, ctx, starter = neuron
    async with running_gateway(gateway_config(url), MODELS) as gateway:
        client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
        async with client:
            listed = {m.id for m in (await client.models.list()).data}
            assert listed == {"org/tiny", "tiny", "org/other"}
            reply = await client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3
            )
            assert reply.choices[0].message.content == "tok0 tok1 tok2"
            stream = await client.chat.completions.create(
                model="org/tiny",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=4,
                stream=True,
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == "tok0 tok1 tok2 tok3 "
        (plan,) = starter.plans
        assert plan.model_id == "org/tiny"
        assert plan.memory_mb == 300
        assert plan.max_model_len == 256
        assert [m.status for m in ctx.lifecycle.models() if m.id == "org/tiny"] == ["loaded"]
        samples = await scrape(gateway.metrics_url)
        assert (
            samples[
                ("cortex_cold_starts_total", frozenset({("model", "org/tiny"), ("node", "box")}))
            ]
            == 1
        )


async def test_the_neurons_own_errors_reach_the_client(neuron):
    url, _, _ = neuron
    async with running_gateway(gateway_config(url), MODELS) as gateway:
        client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
        async with client:
            with pytest.raises(openai.BadRequestError) as info:
                await client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "word " * 400}]
                )
            assert info.value.code == "context_length_exceeded"
            with pytest.raises(openai.NotFoundError) as missing:
                await client.chat.completions.create(
                    model="org/absent", messages=[{"role": "user", "content": "x"}]
                )
            assert missing.value.code == "model_not_found"


async def test_anthropic_messages_and_an_exact_count_through_the_neuron(neuron):
    url, _, _ = neuron
    hi: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]
    async with (
        running_gateway(gateway_config(url), MODELS) as gateway,
        anthropic.AsyncAnthropic(base_url=gateway.url, api_key="x", max_retries=0) as client,
    ):
        estimate = await client.messages.count_tokens(model="tiny", messages=hi)
        reply = await client.messages.create(model="tiny", max_tokens=3, messages=hi)
        async with client.messages.stream(model="org/tiny", max_tokens=4, messages=hi) as stream:
            streamed = await stream.get_final_message()
        counted = await client.messages.count_tokens(model="tiny", system="s", messages=hi)
    assert estimate.model_extra == {"estimated": True}  # not loaded yet, and not loaded by it
    assert reply.content[0].type == "text"
    assert reply.content[0].text == "tok0 tok1 tok2"
    assert reply.usage.output_tokens == 3
    assert streamed.content[0].type == "text"
    assert streamed.content[0].text == "tok0 tok1 tok2 tok3 "
    assert streamed.usage.output_tokens == 4
    assert streamed.usage.input_tokens == reply.usage.input_tokens > 0
    assert counted.model_extra == {}  # exact, from the neuron's /tokenize
    assert counted.input_tokens > 0


async def test_responses_through_the_gateway_and_the_neuron(neuron):
    url, _, starter = neuron
    async with (
        running_gateway(gateway_config(url), MODELS) as gateway,
        openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0) as client,
    ):
        reply = await client.responses.create(
            model="tiny", input="hi", instructions="be brief", max_output_tokens=3
        )
        stream = await client.responses.create(
            model="org/tiny", input="hi", max_output_tokens=4, stream=True
        )
        events = [event async for event in stream]
        samples = await scrape(gateway.metrics_url)
    assert reply.output_text == "tok0 tok1 tok2 "
    assert reply.instructions == "be brief"
    assert reply.usage is not None
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (
        11,
        3,
    )  # (1 + 4) + (2 + 4) words
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["tok0 ", "tok1 ", "tok2 ", "tok3 "]
    series = frozenset({("model", "org/tiny"), ("node", "box")})
    assert samples[("cortex_completion_tokens_total", series)] == 3 + 4
    assert samples[("cortex_time_to_first_token_seconds_count", series)] == 1
    assert [plan.model_id for plan in starter.plans] == ["org/tiny"]  # loaded on demand


async def test_a_responses_client_that_leaves_aborts_the_engines_request(tmp_path):
    fake_model(tmp_path, "org/tiny")
    options = VllmOptions(model_dirs=(str(tmp_path),), cpu_memory_mb=1000)
    starter = FakeStarter(token_delay=0.05)
    ctx = build_context(NeuronConfig(harness=HarnessOptions(vllm=options)), starter, nvml=NoGpu())
    async with (
        serving(create_app(ctx)) as url,
        running_gateway(gateway_config(url), MODELS) as gateway,
        openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0) as client,
    ):
        stream = await client.responses.create(
            model="tiny", input="hi", max_output_tokens=200, stream=True
        )
        async for event in stream:
            if event.type == "response.output_text.delta":
                break
        engine = starter.engines["org/tiny"]
        assert engine.running
        await stream.close()
        for _ in range(250):
            if not engine.running:
                break
            await asyncio.sleep(0.02)
        assert not engine.running
        assert ctx.lifecycle.activity()[0].in_flight == 0
