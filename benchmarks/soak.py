"""The soak of issue 14: many concurrent streams through `cortex serve` to fake neurons for a
while. Each stream asks for its own number of tokens and is checked end to end (every token in
order, then `[DONE]`, no error): none lost, none corrupted. The gateway's RSS is sampled each
second (first vs last 10 s) and the streams' durations are compared with the same load sent
straight to the fakes (the added latency). Not a test; prints a Markdown table.

    python benchmarks/soak.py [--streams 500] [--seconds 60]

Run it through `nox -s bench_soak`. The fakes and this client share one process (and, on the
project's 2-core machine, the cores with the gateway): the figures are the whole setup's.
"""

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
from serving import cortex_serve

from cortex_gateway.testing import FakeNeuron

MODEL = "soak/model"


@dataclass
class Tally:
    durations: list[float] = field(default_factory=list)
    """Each whole stream's time beyond the fake's own pauses (its tokens x the interval)."""
    ok: int = 0
    lost: int = 0
    corrupted: int = 0
    failures: list[str] = field(default_factory=list)


async def stream(session: aiohttp.ClientSession, url: str, tally: Tally, interval: float) -> None:
    tokens = random.randint(5, 25)
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": tokens,
    }
    began = time.perf_counter()
    text, done, error = [], False, False
    try:
        async with session.post(url + "/v1/chat/completions", json=body) as r:
            if r.status != 200:
                tally.lost += 1
                tally.failures.append(f"HTTP {r.status}: {(await r.text())[:200]}")
                return
            async for line in r.content:
                if line.startswith(b"data: [DONE]"):
                    done = True
                elif line.startswith(b"data: {"):
                    event = json.loads(line[6:])
                    error |= "error" in event
                    for choice in event.get("choices") or ():
                        text.append(choice.get("delta", {}).get("content") or "")
    except aiohttp.ClientError as exc:
        tally.lost += 1
        tally.failures.append(repr(exc))
        return
    tally.durations.append(time.perf_counter() - began - tokens * interval)  # beyond the fake's
    if done and not error and "".join(text) == "".join(f"tok{i} " for i in range(tokens)):
        tally.ok += 1
    else:
        tally.corrupted += 1
        tally.failures.append(f"{tokens} asked, got {''.join(text)[:80]!r} done={done}")


async def load(url: str, streams: int, seconds: float, interval: float) -> Tally:
    """Keep ``streams`` streams going for ``seconds`` (a new one as each ends)."""
    tally = Tally()
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:

        async def worker() -> None:
            while time.monotonic() < deadline:
                await stream(session, url, tally, interval)

        await asyncio.gather(*(worker() for _ in range(streams)))
    return tally


async def rss(pid: int, every: float, samples: list[float], stop: asyncio.Event) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        samples.append(process.memory_info().rss / 2**20)
        await asyncio.sleep(every)


def quantile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


async def main(args: argparse.Namespace) -> None:
    fakes = [
        FakeNeuron([MODEL], loaded=[MODEL], record=False, concurrency=10**4, max_queued=10**4)
        for _ in range(args.neurons)
    ]
    for fake in fakes:
        fake.chunk_interval = args.chunk_interval
        await fake.start()
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    peers = "".join(
        f'[[neurons]]\nname = "n{i}"\nendpoint = "{f.url}"\n' for i, f in enumerate(fakes)
    )
    (work / "cortex.toml").write_text(f"[gateway]\npoll_interval_s = 1\n{peers}")
    try:
        direct = await load(fakes[0].url, args.streams, args.baseline_seconds, args.chunk_interval)
        gateway, url = await asyncio.to_thread(cortex_serve, work / "cortex.toml")
        try:
            samples: list[float] = []
            stop = asyncio.Event()
            sampler = asyncio.create_task(rss(gateway.pid, 1.0, samples, stop))
            through = await load(url, args.streams, args.seconds, args.chunk_interval)
            stop.set()
            await sampler
        finally:
            gateway.terminate()
            await asyncio.to_thread(gateway.wait, 60)
    finally:
        for fake in fakes:
            await fake.stop()
    first, last = statistics.mean(samples[:10]), statistics.mean(samples[-10:])
    ms = 1000
    print(
        f"\n{args.streams} concurrent streams for {args.seconds:g} s through the gateway to "
        f"{args.neurons} fake neurons (5-25 tokens, {args.chunk_interval} s apart)\n"
    )
    print("| measure | figure |\n|---|---|")
    print(
        f"| streams completed | {len(through.durations)} "
        f"({len(through.durations) / args.seconds:.0f}/s) |"
    )
    print(f"| lost / corrupted | {through.lost} / {through.corrupted} |")
    for name, q in (("p50", 50), ("p99", 99)):
        added = quantile(through.durations, q) - quantile(direct.durations, q)
        print(
            f"| time beyond the fake's own {name}: direct / through / added | "
            f"{quantile(direct.durations, q) * ms:.0f} ms / "
            f"{quantile(through.durations, q) * ms:.0f} ms / {added * ms:+.0f} ms |"
        )
    print(
        f"| gateway RSS first 10 s / last 10 s | {first:.0f} MiB / {last:.0f} MiB "
        f"({(last - first) / first * 100:+.1f} %) |"
    )
    for failure in (direct.failures + through.failures)[:5]:
        print("failure:", failure)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--baseline-seconds", type=float, default=10)
    parser.add_argument("--neurons", type=int, default=4)
    parser.add_argument("--chunk-interval", type=float, default=0.1)
    asyncio.run(main(parser.parse_args()))
