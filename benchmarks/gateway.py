"""The gateway benchmark of issue 4: one fast fake upstream, four ways to reach it, one run.

(a) direct to the fake upstream, (b) a bare Starlette + Hypercorn + aiohttp pass-through (the
floor of the chosen stack), (c) the cortex gateway (`cortex serve`, with a client key, logging at
its default level), (d) LiteLLM's proxy (one worker, a master key), all on 127.0.0.1. `wrk`
drives POST /v1/chat/completions (non-streaming, max_tokens 16); a small aiohttp client times
1,000-chunk streams. Prints a Markdown table for docs/benchmarks.md.

    python benchmarks/gateway.py [--litellm PATH/TO/litellm] [--seconds 10]

Run it through `nox -s bench_gateway`, which installs wrk and LiteLLM where it can.
"""

import argparse
import asyncio
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

HERE = Path(__file__).parent
MODEL = "bench/model"
KEY = "sk-bench-" + secrets.token_hex(24)
CHUNKS = 1000


@dataclass
class Target:
    name: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    failure: str = ""
    results: dict[str, float] = field(default_factory=dict)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def body(max_tokens: int, stream: bool = False) -> bytes:
    tail = ',"stream":true' if stream else ""
    messages = '[{"role":"user","content":"Say hi"}]'
    return f'{{"model":"{MODEL}","messages":{messages},"max_tokens":{max_tokens}{tail}}}'.encode()


def start(name: str, argv: list[str], logs: Path) -> subprocess.Popen[bytes]:
    with (logs / f"{name}.log").open("wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(target: Target, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    request = urllib.request.Request(
        target.url + "/v1/chat/completions",
        data=body(4),
        headers={"content-type": "application/json", **target.headers},
    )
    while time.monotonic() < deadline:
        if target.process is not None and target.process.poll() is not None:
            raise RuntimeError(f"exited with {target.process.returncode} before answering")
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise RuntimeError(f"no answer within {limit_s:.0f} s")


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        todo += children.get(current, [])
    return total


def wrk(target: Target, connections: int, seconds: int, script: Path) -> dict[str, float]:
    argv = [
        "wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency",
        "-s", str(script), target.url + "/v1/chat/completions",
    ]  # fmt: skip
    pid = target.process.pid if target.process else None
    before = cpu_seconds(pid) if pid else 0.0
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    cpu = (cpu_seconds(pid) - before) if pid else 0.0
    if "Non-2xx" in output:
        raise RuntimeError(f"errors under load:\n{output}")
    requests = int(re.search(r"(\d+) requests in", output)[1])  # type: ignore[index]

    def latency(percent: str) -> float:
        value, unit = re.search(rf"\s{percent}%\s+([\d.]+)(us|ms|s)\b", output).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1]),  # type: ignore[index]
        "cpu_ms_per_request": cpu * 1000 / requests if requests else 0.0,
    }


async def stream_rate(target: Target, runs: int = 3) -> float:
    rates = []
    headers = {"content-type": "application/json", **target.headers}
    async with aiohttp.ClientSession() as session:
        for _ in range(runs):
            started = time.perf_counter()
            events = 0
            async with session.post(
                target.url + "/v1/chat/completions", data=body(CHUNKS, stream=True), headers=headers
            ) as resp:
                assert resp.status == 200, await resp.text()
                async for data in resp.content.iter_any():
                    events += data.count(b"data: ")
            elapsed = time.perf_counter() - started
            if events < CHUNKS:
                raise RuntimeError(f"only {events} events in a {CHUNKS}-chunk stream")
            rates.append(events / elapsed)
    return statistics.median(rates)


def measure(target: Target, seconds: int, scripts: Path) -> None:
    script = scripts / f"{target.name}.lua"
    headers = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in target.headers.items())
    script.write_text(
        'wrk.method = "POST"\nwrk.body = [[' + body(16).decode() + "]]\n"
        'wrk.headers["Content-Type"] = "application/json"\n' + headers
    )
    one = wrk(target, 1, max(3, seconds // 2), script)
    many = wrk(target, 64, seconds, script)
    target.results = {
        "p50_ms": one["p50_ms"],
        "p99_ms": one["p99_ms"],
        "rps": many["rps"],
        "cpu_ms_per_request": many["cpu_ms_per_request"],
        "chunks_per_s": asyncio.run(stream_rate(target)),
    }


def table(targets: list[Target]) -> str:
    direct = targets[0].results
    bare = next((t.results for t in targets if t.name == "bare pass-through"), {})
    rows = [
        "| target | c=1 p50 | c=1 p99 | added p50 | c=64 req/s | CPU per request | CPU vs bare "
        "| 1,000-chunk stream |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in targets:
        if t.failure:
            rows.append(f"| {t.name} | {t.failure} | | | | | | |")
            continue
        r = t.results
        is_direct = t is targets[0]
        added = "-" if is_direct else f"+{r['p50_ms'] - direct['p50_ms']:.2f} ms"
        cpu = "-" if is_direct else f"{r['cpu_ms_per_request']:.2f} ms"
        ratio = (
            "-"
            if is_direct or not bare
            else f"{r['cpu_ms_per_request'] / bare['cpu_ms_per_request']:.2f}x"
        )
        rows.append(
            f"| {t.name} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {added} | {r['rps']:,.0f} "
            f"| {cpu} | {ratio} | {r['chunks_per_s']:,.0f} chunks/s |"
        )
    return "\n".join(rows)


def aims(targets: list[Target]) -> str:
    by_name = {t.name: t.results for t in targets if not t.failure}
    gateway, bare, litellm = (
        by_name.get(n) for n in ("cortex gateway", "bare pass-through", "LiteLLM proxy")
    )
    lines = []
    if gateway and bare:
        ratio = gateway["cpu_ms_per_request"] / bare["cpu_ms_per_request"]
        verdict = "met" if ratio <= 1.2 else "missed"
        lines.append(f"- CPU per request ≤ 1.2x the bare pass-through: {ratio:.2f}x — {verdict}")
    if gateway and litellm:
        ratio = gateway["rps"] / litellm["rps"]
        lines.append(
            f"- req/s ≥ 15x LiteLLM's: {ratio:.1f}x — {'met' if ratio >= 15 else 'missed'}"
        )
    else:
        lines.append("- req/s ≥ 15x LiteLLM's: not measured (LiteLLM did not run)")
    if gateway and bare:
        ratio = gateway["chunks_per_s"] / bare["chunks_per_s"]
        verdict = "met" if ratio >= 0.8 else "missed"
        lines.append(f"- stream chunks/s ≥ 0.8x the bare pass-through's: {ratio:.2f}x — {verdict}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--litellm", help="the litellm executable (its own venv); omit to skip")
    parser.add_argument("--litellm-failure", default="", help="why LiteLLM could not be installed")
    parser.add_argument("--seconds", type=int, default=10, help="length of the c=64 runs")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds over every target, alternating (medians)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="cortex-bench-"))
    python = sys.executable
    up_port, bare_port, ll_port = (free_port() for _ in range(3))
    upstream = f"http://127.0.0.1:{up_port}"
    processes = [start("upstream", [python, str(HERE / "upstream.py"), str(up_port)], work)]
    targets = [Target("direct", upstream, process=processes[0])]
    wait_ready(targets[0], 30)

    bare = Target("bare pass-through", f"http://127.0.0.1:{bare_port}")
    bare.process = start(
        "bare", [python, str(HERE / "passthrough.py"), str(bare_port), upstream], work
    )
    targets.append(bare)

    (work / "cortex.toml").write_text(
        f'[auth]\napi_keys = ["{KEY}"]\n[[neurons]]\nname = "bench"\nendpoint = "{upstream}"\n'
    )
    key = {"Authorization": f"Bearer {KEY}"}
    for name, flags in (
        ("cortex gateway", []),
        ("cortex gateway, --no-access-log", ["--no-access-log"]),
    ):
        gateway = Target(name, f"http://127.0.0.1:{free_port()}", key)
        gateway.process = start(
            name.replace(" ", "-").replace(",", ""),
            [python, "-m", "cortex_cli", "serve", "-c", str(work / "cortex.toml"),
             "--listen", gateway.url.removeprefix("http://"),
             "--metrics-listen", f"127.0.0.1:{free_port()}", *flags],
            work,
        )  # fmt: skip
        targets.append(gateway)

    litellm = Target("LiteLLM proxy", f"http://127.0.0.1:{ll_port}", key)
    if args.litellm:
        (work / "litellm.yaml").write_text(
            f"model_list:\n  - model_name: {MODEL}\n    litellm_params:\n"
            f"      model: openai/{MODEL}\n      api_base: {upstream}/v1\n      api_key: none\n"
            f"general_settings:\n  master_key: {KEY}\n"
        )
        litellm.process = start(
            "litellm",
            ["env", "LITELLM_LOCAL_MODEL_COST_MAP=True", "LITELLM_LOG=ERROR",
             args.litellm, "--config", str(work / "litellm.yaml"), "--host", "127.0.0.1",
             "--port", str(ll_port), "--num_workers", "1"],
            work,
        )  # fmt: skip
    else:
        litellm.failure = args.litellm_failure or "not run (no --litellm)"
    targets.append(litellm)

    rounds: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
    try:
        for round_ in range(args.rounds):  # alternating, so a noisy minute hits every target
            for target in targets:
                if target.failure:
                    continue
                try:
                    wait_ready(target, 180)
                    print(f"round {round_ + 1}: {target.name}…", file=sys.stderr, flush=True)
                    measure(target, args.seconds, work)
                    rounds[target.name].append(target.results)
                except (RuntimeError, subprocess.CalledProcessError) as exc:
                    reason = str(exc).splitlines()[0]
                    target.failure = f"failed: {reason} (logs in {work})"
        for target in targets:
            if rounds[target.name]:
                target.results = {
                    k: statistics.median(r[k] for r in rounds[target.name]) for k in target.results
                }
    finally:
        for process in [t.process for t in targets if t.process]:
            process.terminate()
        for process in [t.process for t in targets if t.process]:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    print(table(targets))
    print()
    print(aims(targets))


if __name__ == "__main__":
    main()
