"""Every cortex_* metric moves as it should after real requests (scraped and parsed)."""

import asyncio

import aiohttp
import openai
import pytest

from cortex_core.config import EvictionOptions
from cortex_gateway.testing import PROMPT_TOKENS, eventually, fleet_config, running_gateway, scrape

pytestmark = pytest.mark.timeout(30)

HI = [{"role": "user", "content": "hi"}]
MIB = 1024 * 1024


def labels(**kv: str) -> frozenset[tuple[str, str]]:
    return frozenset(kv.items())


A1 = labels(model="org/a", node="n1")


async def test_request_metrics_follow_real_requests(neuron, client):
    async with running_gateway(fleet_config(neuron)) as gw:
        sdk = client(gw.url)
        await sdk.chat.completions.create(model="org/a", messages=HI)
        neuron.chunks, neuron.chunk_interval = 5, 0.25
        stream = await sdk.chat.completions.create(model="org/a", messages=HI, stream=True)
        async for _ in stream:
            pass
        with pytest.raises(openai.NotFoundError):
            await sdk.chat.completions.create(model="org/unknown", messages=HI)
        neuron.chunk_interval, neuron.die_after = 0, 1
        with pytest.raises(openai.APIError):
            async for _ in await sdk.chat.completions.create(
                model="org/a", messages=HI, stream=True
            ):
                pass
        samples = await scrape(gw.metrics_url)

    def count(name: str, **kv: str) -> float:
        return samples.get((name, labels(**kv)), 0)

    assert count("cortex_requests_total", model="org/a", node="n1", status="200") == 3
    assert count("cortex_requests_total", model="-", node="-", status="404") == 1
    assert count("cortex_request_errors_total", model="-", node="-", kind="model_not_found") == 1
    assert (
        count("cortex_request_errors_total", model="org/a", node="n1", kind="upstream_error") == 1
    )
    assert samples[("cortex_request_duration_seconds_count", A1)] == 3
    assert samples[("cortex_request_duration_seconds_sum", A1)] >= 1.25  # 5 x 0.25 s
    # time to first token: at the first content chunk (0.25 s in), not the first byte (the
    # role, at once). Only bounds a slow machine cannot break: pacing is a floor, never a cap.
    assert samples[("cortex_time_to_first_token_seconds_count", A1)] == 2
    assert samples[("cortex_time_to_first_token_seconds_sum", A1)] >= 0.25
    # 4 tokens after the first one, no faster than one per 0.25 s; the broken stream has no usage
    assert samples[("cortex_tokens_per_second_count", A1)] == 1
    assert 0 < samples[("cortex_tokens_per_second_sum", A1)] <= 4 * 1.05
    assert samples[("cortex_prompt_tokens_total", A1)] == 2 * PROMPT_TOKENS
    assert samples[("cortex_completion_tokens_total", A1)] == 3 + 5
    assert samples[("cortex_in_flight_requests", A1)] == 0


async def test_in_flight_and_a_client_that_went_away(neuron, client):
    neuron.latency = 30
    async with running_gateway(fleet_config(neuron)) as gw:
        pending = asyncio.create_task(
            client(gw.url, timeout=2.0).chat.completions.create(model="org/a", messages=HI)
        )

        async def in_flight() -> bool:
            return (await scrape(gw.metrics_url)).get(("cortex_in_flight_requests", A1)) == 1

        await eventually(in_flight)
        with pytest.raises(openai.APITimeoutError):
            await pending
        await asyncio.wait_for(neuron.abort_seen.wait(), 5)

        async def settled() -> bool:
            samples = await scrape(gw.metrics_url)
            return samples.get(("cortex_requests_total", A1 | {("status", "499")})) == 1

        await eventually(settled)
        samples = await scrape(gw.metrics_url)
    assert samples[("cortex_in_flight_requests", A1)] == 0
    assert samples[("cortex_request_errors_total", A1 | {("kind", "client_disconnected")})] == 1


async def test_loads_unloads_nodes_and_devices(neuron, client):
    neuron.load_time = 0.2
    config = fleet_config(neuron, eviction=EvictionOptions(defrag_after_cycles=1))
    async with running_gateway(config) as gw, aiohttp.ClientSession() as session:
        await client(gw.url).chat.completions.create(model="org/b", messages=HI)
        async with session.post(gw.url + "/admin/models/unload", json={"model": "org/b"}) as r:
            assert r.status == 200
        samples = await scrape(gw.metrics_url)
    b1 = labels(model="org/b", node="n1")
    assert samples[("cortex_cold_starts_total", b1)] == 1
    assert samples[("cortex_model_load_seconds_count", b1)] == 1
    assert samples[("cortex_model_load_seconds_sum", b1)] >= 0.2
    assert samples[("cortex_evictions_total", labels(node="n1", reason="admin"))] == 1
    assert samples[("cortex_load_unload_cycles_total", labels(node="n1"))] == 1
    assert samples[("cortex_node_defrag_due", labels(node="n1"))] == 1
    assert samples[("cortex_node_up", labels(node="n1"))] == 1
    device = labels(node="n1", device="0", kind="gpu")
    assert samples[("cortex_device_memory_total_bytes", device)] == 24000 * MIB
    # org/a's 1000 MiB, and org/b's 90 % of the device (it names no vram_mb) if the unload has
    # not been polled yet
    used = samples[("cortex_device_memory_used_bytes", device)]
    assert used in (1000 * MIB, (1000 + 21600) * MIB)
    assert (
        samples[("cortex_device_memory_used_bytes", device)]
        + samples[("cortex_device_memory_free_bytes", device)]
        == 24000 * MIB
    )
    assert samples[("cortex_device_utilization_ratio", device)] == 0.1


async def test_a_neuron_reporting_negative_usage_is_still_answered(neuron, client):
    """The double answers `max_tokens: -3` with usage of -3 tokens (vLLM would refuse it): the
    request is served and the token counters do not move backwards."""
    async with running_gateway(fleet_config(neuron)) as gw:
        answer = await client(gw.url).chat.completions.create(
            model="org/a", messages=HI, max_tokens=-3
        )
        samples = await scrape(gw.metrics_url)
    assert answer.usage is not None
    assert answer.usage.completion_tokens == -3
    assert samples[("cortex_completion_tokens_total", A1)] == 0
    assert samples[("cortex_prompt_tokens_total", A1)] == PROMPT_TOKENS
