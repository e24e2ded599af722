"""Fixtures of the gateway's tests: fake neurons and OpenAI clients that close themselves."""

from collections.abc import AsyncIterator, Callable

import openai
import pytest

from cortex_gateway.testing import FakeNeuron


@pytest.fixture
async def neuron() -> AsyncIterator[FakeNeuron]:
    """A fake neuron knowing ``org/a`` (loaded) and ``org/b`` (available)."""
    async with FakeNeuron(["org/a", "org/b"], loaded=["org/a"]) as fake:
        yield fake


@pytest.fixture
async def client() -> AsyncIterator[Callable[..., openai.AsyncOpenAI]]:
    """Makes OpenAI SDK clients for a gateway URL (no retries: every answer is seen)."""
    made: list[openai.AsyncOpenAI] = []

    def make(url: str, api_key: str = "none", timeout: float = 10.0) -> openai.AsyncOpenAI:
        made.append(
            openai.AsyncOpenAI(
                base_url=url + "/v1", api_key=api_key, max_retries=0, timeout=timeout
            )
        )
        return made[-1]

    yield make
    for c in made:
        await c.close()
