"""The fleet at scale (issue 14): 100 fake neurons x 10 loaded models each, in this process,
behind `cortex serve` (its own process). Measures a full poll cycle (the gateway's own poller
over every node), `/v1/models` and `/fleet` latency, and how many concurrent streams the
gateway holds and ends whole. Not a test; prints a Markdown table for docs/reliability.md.

    python benchmarks/fleet.py [--nodes 100] [--models 10] [--streams 2000]

Run it through `nox -s bench_fleet`. Targets: a full poll cycle ≤ 1 s, `/v1/models` ≤ 5 ms p99.
"""

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry
from serving import cortex_serve

from cortex_core import encode
from cortex_core.config import ModelsConfig, NeuronPeer
from cortex_gateway.fleet.catalogue import Catalogue
from cortex_gateway.fleet.node import Node
from cortex_gateway.fleet.poller import Poller
from cortex_gateway.metrics import Metrics
from cortex_gateway.testing import FakeNeuron
from cortex_gateway.upstream import AiohttpUpstream

CATALOGUE = 200
"""Distinct model ids; node i holds ids i*10 … i*10+9 (mod 200), so each is on five nodes."""


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


async def poll_cycles(fakes: list[FakeNeuron], cycles: int) -> tuple[list[float], list[Node]]:
    """Seconds each full cycle of the gateway's poller took over every node (all at once)."""
    nodes = [Node(NeuronPeer(name=f"n{i}", endpoint=f.url)) for i, f in enumerate(fakes)]
    times = []
    async with AiohttpUpstream.open() as upstream:
        poller = Poller(nodes, upstream, Metrics(CollectorRegistry()), interval=2.0)
        for _ in range(cycles):
            began = time.perf_counter()
            await poller.poll_all()
            times.append(time.perf_counter() - began)
    assert all(n.up for n in nodes)
    return times, nodes


def listing(nodes: list[Node], count: int) -> list[float]:
    """Seconds to build and encode ``/v1/models`` in this process, away from any HTTP."""
    catalogue = Catalogue(ModelsConfig(), nodes)
    times = []
    for _ in range(count):
        began = time.perf_counter()
        encode(catalogue.model_list())
        times.append(time.perf_counter() - began)
    return times


async def latencies(url: str, path: str, count: int) -> list[float]:
    """Seconds of ``count`` sequential GETs, timed by a process of their own: this one's event
    loop also serves the fakes (the gateway's polls), whose turns would count as latency."""
    probe = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--probe",
        url + path,
        str(count),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await probe.communicate()
    return [float(t) for t in out.split()]


async def _probe(url: str, count: int) -> None:
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            began = time.perf_counter()
            async with session.get(url) as r:
                await r.read()
                assert r.status == 200
            times.append(time.perf_counter() - began)
    print(" ".join(f"{t:.6f}" for t in times))


async def held_streams(url: str, streams: int, model: str, tokens: int) -> tuple[int, int, float]:
    """Open ``streams`` at once; (how many were open together, how many ended whole, seconds)."""
    opened = asyncio.Semaphore(0)
    connector = aiohttp.TCPConnector(limit=0)
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": tokens,
    }
    expected = "".join(f"tok{i} " for i in range(tokens))
    peak = 0
    live = 0

    async def one(session: aiohttp.ClientSession) -> bool:
        nonlocal peak, live
        text = []
        async with session.post(url + "/v1/chat/completions", json=body) as r:
            first = True
            async for line in r.content:
                if first:
                    live += 1
                    peak = max(peak, live)
                    opened.release()
                    first = False
                if line.startswith(b"data: {"):
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    text.append(choices[0].get("delta", {}).get("content") or "")
            live -= 1
        return "".join(text) == expected

    began = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        results = await asyncio.gather(
            *(one(session) for _ in range(streams)), return_exceptions=True
        )
    whole = sum(1 for r in results if r is True)
    return peak, whole, time.perf_counter() - began


async def main(args: argparse.Namespace) -> None:
    fakes = []
    for i in range(args.nodes):
        ids = [f"org/m{(i * args.models + j) % CATALOGUE}" for j in range(args.models)]
        fake = FakeNeuron(
            ids, loaded=ids, device_mb=10**6, record=False, concurrency=10**4, max_queued=10**4
        )
        fake.chunks, fake.chunk_interval = 20, args.chunk_interval
        await fake.start()
        fakes.append(fake)
    try:
        cycles, nodes = await poll_cycles(fakes, args.cycles)
        built = listing(nodes, args.requests)
        work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
        peers = "".join(
            f'[[neurons]]\nname = "n{i}"\nendpoint = "{f.url}"\n' for i, f in enumerate(fakes)
        )
        (work / "cortex.toml").write_text(f"[gateway]\npoll_interval_s = 2\n{peers}")
        gateway, url = await asyncio.to_thread(cortex_serve, work / "cortex.toml")
        try:
            floor = await latencies(url, "/health", args.requests)
            models = await latencies(url, "/v1/models", args.requests)
            fleet = await latencies(url, "/fleet", args.requests // 5)
            peak, whole, seconds = await held_streams(url, args.streams, "org/m0", 20)
        finally:
            gateway.terminate()
            await asyncio.to_thread(gateway.wait, 60)
    finally:
        for fake in fakes:
            await fake.stop()
    ms = 1000
    print(f"\n{args.nodes} nodes x {args.models} models ({CATALOGUE} ids)\n")
    print("| measure | p50 | p99 | target |\n|---|---|---|---|")
    print(
        f"| full poll cycle ({args.cycles} cycles) | {statistics.median(cycles) * ms:.0f} ms | "
        f"{max(cycles) * ms:.0f} ms (max) | ≤ 1 s |"
    )
    print(
        f"| `/health`, the HTTP floor ({len(floor)} GETs) | {p(floor, 50) * ms:.2f} ms | "
        f"{p(floor, 99) * ms:.2f} ms | - |"
    )
    print(
        f"| `/v1/models` ({len(models)} GETs) | {p(models, 50) * ms:.2f} ms | "
        f"{p(models, 99) * ms:.2f} ms | ≤ 5 ms p99 |"
    )
    print(
        f"| `/v1/models` built and encoded, no HTTP ({len(built)} times) | "
        f"{p(built, 50) * ms:.2f} ms | {p(built, 99) * ms:.2f} ms | - |"
    )
    print(
        f"| `/fleet` ({len(fleet)} GETs) | {p(fleet, 50) * ms:.2f} ms | "
        f"{p(fleet, 99) * ms:.2f} ms | - |"
    )
    print(
        f"| {args.streams} streams at once (20 chunks, {args.chunk_interval} s apart) | "
        f"{peak} open together | {whole} ended whole | {seconds:.1f} s in all |"
    )


if __name__ == "__main__" and sys.argv[1:2] == ["--probe"]:
    asyncio.run(_probe(sys.argv[2], int(sys.argv[3])))
elif __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--chunk-interval", type=float, default=0.5)
    asyncio.run(main(parser.parse_args()))
