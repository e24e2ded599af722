"""The benchmark's upstream: cortex_gateway.testing's fake neuron, fast (no recording)."""

import asyncio
import sys

from cortex_gateway.testing import FakeNeuron

MODEL = "bench/model"


async def main(port: int) -> None:
    neuron = FakeNeuron([MODEL], loaded=[MODEL], record=False)
    await neuron.start(port)
    print(neuron.url, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
