"""Benchmark: a cold start, measured against vLLM's own server on the same machine, same run.

Run it with `nox -s bench_cold_start` (it needs vLLM's CPU build). Each round measures:

- (a) vLLM's OpenAI server with the tiny model, from process start to the first streamed token;
- (b) `neuron serve`, already running and idle, from `POST /models/load` to the first token;
- (c) the same through `cortex serve`: a chat for the model that is not loaded, to its first token;
- (d) `POST /models/unload` until it returns (the engine's processes gone, its memory released).

Between rounds the neuron idles for `--settle` seconds, time for its warm spare (an engine core
and worker that have imported vLLM, DESIGN §3) to be ready again, as it is on a host whose
loads are not back to back. It prints the medians as a table with (b) and (c) as ratios of (a).
A benchmark, not a gate.
"""

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from neuron import KV_MB, MAX_LEN, MODEL, first_stream, free_port, start_vllm, stop, wait_ready

_LISTENING = re.compile(r"cortex gateway on (http://\S+),")


def vllm_start_to_first_token(model_path: Path) -> float:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = start_vllm(model_path, port)
    try:
        wait_ready(url, process)
        asyncio.run(first_stream(url))
        return time.perf_counter() - started
    finally:
        stop(process)


class Stack:
    """`neuron serve` and `cortex serve` in front of it, both idle."""

    def __init__(self, model_dir: Path, folder: Path) -> None:
        port = free_port()
        self.neuron_url = f"http://127.0.0.1:{port}"
        (folder / "neuron.toml").write_text(
            f'host = "127.0.0.1"\nport = {port}\n[harness.vllm]\nmodel_dirs = ["{model_dir}"]\n'
            "cpu_memory_mb = 4096\nengine_args = { enforce_eager = true }\n"
        )
        (folder / "models.toml").write_text(
            f'[[models]]\nid = "{MODEL}"\nvram_mb = {KV_MB + 5}\nmax_model_len = {MAX_LEN}\n'
        )
        (folder / "cortex.toml").write_text(
            'models_config = "models.toml"\n[gateway]\npoll_interval_s = 0.5\n'
            f'[[neurons]]\nname = "local"\nendpoint = "{self.neuron_url}"\n'
        )
        self.neuron = subprocess.Popen(
            [sys.executable, "-m", "cortex_neuron", "serve", "-c", str(folder / "neuron.toml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_ready(self.neuron_url, self.neuron)
        command = [
            sys.executable, "-m", "cortex_cli", "serve", "-c", str(folder / "cortex.toml"),
            "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
        ]  # fmt: skip
        self.gateway = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        assert self.gateway.stderr is not None
        for line in self.gateway.stderr:
            if match := _LISTENING.search(line):
                self.gateway_url = match[1]
                break
        else:
            raise RuntimeError("the gateway exited before listening")
        threading.Thread(target=self.gateway.stderr.read, daemon=True).start()

    def load_to_first_token(self) -> float:
        started = time.perf_counter()
        spec = {"model_id": MODEL, "memory_mb": KV_MB + 5, "max_model_len": MAX_LEN}
        httpx.post(f"{self.neuron_url}/models/load", json=spec, timeout=600).raise_for_status()
        asyncio.run(first_stream(self.neuron_url))
        return time.perf_counter() - started

    def cold_chat_to_first_token(self) -> float:
        deadline = time.monotonic() + 30  # the gateway's poll has seen the unload
        while time.monotonic() < deadline:
            fleet = httpx.get(f"{self.gateway_url}/fleet", timeout=10).json()
            if not any(m["status"] == "loaded" for n in fleet["nodes"] for m in n["models"]):
                break
            time.sleep(0.2)
        started = time.perf_counter()
        asyncio.run(first_stream(self.gateway_url))
        return time.perf_counter() - started

    def unload(self) -> float:
        started = time.perf_counter()
        body = {"model_id": MODEL}
        httpx.post(f"{self.neuron_url}/models/unload", json=body, timeout=600).raise_for_status()
        return time.perf_counter() - started

    def phases(self) -> dict[str, float]:
        text = httpx.get(f"{self.neuron_url}/metrics", timeout=10).text
        sums = dict(re.findall(r'neuron_load_seconds_sum\{.*?phase="(\w+)"\} (\S+)', text))
        counts = dict(re.findall(r'neuron_load_seconds_count\{.*?phase="(\w+)"\} (\S+)', text))
        return {phase: float(sums[phase]) / float(counts[phase]) for phase in sums}

    def close(self) -> None:
        stop(self.gateway)
        stop(self.neuron)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--settle", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=Path("bench-cold-start.json"))
    args = parser.parse_args()
    from cortex_neuron.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = Path(scratch) / "models"
        path = build_tiny_model(model_dir)
        rounds: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": []}
        for i in range(args.rounds):
            rounds["a"].append(vllm_start_to_first_token(path))
            print(f"(a) round {i + 1}: {rounds['a'][-1]:.1f} s", flush=True)
        stack = Stack(model_dir, Path(scratch))
        try:
            for i in range(args.rounds):
                time.sleep(args.settle)
                rounds["b"].append(stack.load_to_first_token())
                rounds["d"].append(stack.unload())
                time.sleep(args.settle)
                rounds["c"].append(stack.cold_chat_to_first_token())
                rounds["d"].append(stack.unload())
                this = {"b": rounds["b"][-1], "c": rounds["c"][-1], "d": rounds["d"][-2:]}
                print(f"round {i + 1}: {json.dumps(this)}", flush=True)
            phases = stack.phases()
        finally:
            stack.close()
    args.out.write_text(json.dumps({"rounds": rounds, "phases": phases}, indent=2))
    print(report(rounds, phases))


def report(rounds: dict[str, list[float]], phases: dict[str, float]) -> str:
    a, b, c, d = (statistics.median(rounds[k]) for k in "abcd")
    lines = [
        "| | median | of (a) |",
        "|---|---|---|",
        f"| (a) vLLM's server, process start to first token | {a:.1f} s | 1.00x |",
        f"| (b) neuron, `/models/load` to first token | {b:.1f} s | {b / a:.2f}x |",
        f"| (c) gateway, cold chat to first token | {c:.1f} s | {c / a:.2f}x |",
        f"| (d) unload until it returns | {d:.2f} s | |",
        "",
        "neuron_load_seconds by phase (mean): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(phases.items())),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
