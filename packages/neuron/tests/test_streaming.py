"""How a stream ended is what the neuron's metrics count: ok, the client gone, or an error."""

import asyncio
import time

from cortex_neuron.engine.fake import FakeStarter

STREAM = {
    "model": "org/alpha",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "max_tokens": 500,
}


async def until(condition, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        await asyncio.sleep(0.01)


def counted(text: str, status: str) -> bool:
    return f'neuron_requests_total{{model="org/alpha",route="chat",status="{status}"}} 1.0' in text


async def first_event(neuron) -> None:
    async with neuron.http.stream("POST", "/v1/chat/completions", json=STREAM) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                return


async def test_a_stream_the_client_left_is_counted_as_499_not_200(make_neuron):
    async with make_neuron(starter_=FakeStarter(token_delay=0.05)) as neuron:
        await neuron.load(memory_mb=100)
        await first_event(neuron)  # and leave
        await until(lambda: neuron.ctx.lifecycle.activity()[0].in_flight == 0)
        text = (await neuron.http.get("/metrics")).text
        assert counted(text, "499")
        assert 'status="200"' not in text


async def test_a_stream_ended_by_a_forced_unload_is_counted_with_its_error(make_neuron):
    async with make_neuron(starter_=FakeStarter(token_delay=0.05)) as neuron:
        await neuron.load(memory_mb=100)
        async with neuron.http.stream("POST", "/v1/chat/completions", json=STREAM) as response:
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("data:")
            unload = {"model_id": "org/alpha", "force": True}
            assert (await neuron.http.post("/models/unload", json=unload)).status_code == 200
            rest = [line async for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        text = (await neuron.http.get("/metrics")).text
        assert counted(text, "503")
        assert 'status="200"' not in text


async def test_an_engine_failure_mid_stream_is_counted_as_its_error(make_neuron):
    async with make_neuron(starter_=FakeStarter(token_delay=0.05)) as neuron:
        await neuron.load(memory_mb=100)
        async with neuron.http.stream("POST", "/v1/chat/completions", json=STREAM) as response:
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("data:")
            neuron.starter.engines["org/alpha"].kill("worker lost")
            [line async for line in lines]
        text = (await neuron.http.get("/metrics")).text
        assert counted(text, "503")


async def test_a_whole_stream_is_counted_as_200(make_neuron):
    async with make_neuron() as neuron:
        await neuron.load(memory_mb=100)
        short = {**STREAM, "max_tokens": 3}
        async with neuron.http.stream("POST", "/v1/chat/completions", json=short) as response:
            assert [line async for line in response.aiter_lines() if line][-1] == "data: [DONE]"
        assert counted((await neuron.http.get("/metrics")).text, "200")
