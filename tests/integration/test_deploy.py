"""What operators deploy with (deploy/): the systemd units pass `systemd-analyze verify`, the
alerting rules pass `promtool check rules`, and a real Prometheus started here with the shipped
scrape config scrapes a running gateway and neuron and holds a sample of every metric the Grafana
dashboard queries.

The tools are Debian's (`systemd`, `prometheus`): a test installs a missing one with apt-get and
fails, never skips, when it cannot. Everything listens on 127.0.0.1.
"""

import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
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
from cortex_gateway.server import GRACEFUL_TIMEOUT_S
from cortex_gateway.testing import running_gateway
from cortex_neuron.app import build_context, create_app
from cortex_neuron.engine.fake import FakeStarter
from cortex_neuron.testing import eventually, fake_model, serving

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "cortex-dashboard.json"
PROMETHEUS = DEPLOY / "prometheus"
METRIC = re.compile(r"\b(?:cortex|neuron)_[a-z0-9_]+")
UNITS = {"neuron": DEPLOY / "neuron.service", "cortex": DEPLOY / "cortex.service"}


def debian_tool(command: str, package: str) -> str:
    """The path of ``command``, installing Debian's ``package`` with apt-get when it is missing.

    Fails the test (never skips it) when the tool is missing and cannot be installed.
    """
    found = shutil.which(command)
    if found is not None:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.fail(f"{command} is missing and there is no apt-get to install {package}")
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for args in (["update", "-qq"], ["install", "-y", "-qq", "--no-install-recommends", package]):
        done = subprocess.run(
            [apt, *args], env=env, capture_output=True, text=True, timeout=600, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"apt-get {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    found = shutil.which(command)
    if found is None:
        pytest.fail(f"{package} installed but {command} is still not on PATH")
    return found


def unit(name: str) -> dict[str, dict[str, str]]:
    """A unit file's sections and keys (a repeated key: its last value, as systemd's scalars)."""
    sections: dict[str, dict[str, str]] = {}
    section: dict[str, str] = {}
    for line in UNITS[name].read_text().splitlines():
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            section[key.strip()] = value.strip()
    return sections


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match is not None, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = debian_tool("systemd-analyze", "systemd")
    # verify checks that ExecStart exists: point it at this venv's commands, as installed.
    bin_dir = Path(sys.executable).parent
    for name, path in UNITS.items():
        text = path.read_text()
        assert f"/opt/{name}/bin/{name} serve" in text
        (tmp_path / path.name).write_text(text.replace(f"/opt/{name}/bin/", f"{bin_dir}/"))
    done = subprocess.run(
        [analyze, "verify", *(p.name for p in UNITS.values())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # An unknown key or a bad value is only a warning: there must be none.
    assert done.stderr == ""
    assert done.stdout == ""


@pytest.mark.parametrize("name", list(UNITS))
def test_the_units_run_as_a_dedicated_user_hardened_and_drain_in_time(name: str) -> None:
    parsed = unit(name)
    service, unit_section = parsed["Service"], parsed["Unit"]
    assert service["User"] == service["Group"] == name
    assert service["KillMode"] == "mixed"
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    assert int(unit_section["StartLimitBurst"]) > 0
    assert seconds(service["TimeoutStartSec"]) > 0
    assert service["StateDirectory"].split()[0] == name
    assert service["NoNewPrivileges"] == "true"
    assert service["ProtectSystem"] in ("full", "strict")
    assert service["PrivateTmp"] == "true"
    assert f"--config /etc/cortex/{name}.toml" in service["ExecStart"]
    # Above the drain bound: the neuron drains, then shuts its engines down, each bounded by
    # drain_timeout_s (DESIGN, Deactivation); the gateway lets requests finish for 10 s.
    drain = 2 * VllmOptions().drain_timeout_s if name == "neuron" else GRACEFUL_TIMEOUT_S
    assert seconds(service["TimeoutStopSec"]) > drain


def test_the_alerting_rules_pass_promtool() -> None:
    promtool = debian_tool("promtool", "prometheus")
    done = subprocess.run(
        [promtool, "check", "rules", str(PROMETHEUS / "cortex-alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout
    rules = (PROMETHEUS / "cortex-alerts.yml").read_text()
    for alert in ("NodeDown", "ModelLoadFailing", "HighErrorRate", "SlowFirstToken"):
        assert f"alert: Cortex{alert}" in rules


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def dashboard_metrics() -> set[str]:
    return {name for query in dashboard_queries() for name in METRIC.findall(query)}


def test_the_dashboard_has_the_panels_an_operator_needs() -> None:
    titles = " | ".join(p["title"] for p in json.loads(DASHBOARD.read_text())["panels"])
    for words in (
        "Requests per second by model",
        "Errors",
        "Time to first token p50 / p95",
        "Tokens per second",
        "Cold starts",
        "load seconds",
        "Evictions by reason",
        "Queue depth",
        "In flight",
        "Memory used per device",
        "Nodes up",
    ):
        assert words in titles
    wanted = {
        "cortex_requests_total",
        "cortex_request_errors_total",
        "cortex_time_to_first_token_seconds_bucket",
        "cortex_tokens_per_second_bucket",
        "cortex_cold_starts_total",
        "cortex_model_load_seconds_sum",
        "cortex_evictions_total",
        "cortex_queue_depth",
        "cortex_in_flight_requests",
        "cortex_device_memory_used_bytes",
        "cortex_node_up",
    }
    assert wanted <= dashboard_metrics()


class NoGpu:
    class NVMLError(Exception):
        pass

    def nvmlInit(self) -> None:
        raise self.NVMLError("NVML Shared Library Not Found")


@dataclass
class Fleet:
    gateway_metrics: str
    neuron: str


@asynccontextmanager
async def driven_fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """A real neuron (fake engine) and the real gateway, after the traffic that makes every
    series the dashboard draws exist: a cold load, a chat, a streamed chat, an Anthropic
    message, an error, and an operator's unload (an eviction)."""
    fake_model(tmp_path, "org/tiny")
    options = VllmOptions(model_dirs=(str(tmp_path),), cpu_memory_mb=1000)
    starter = FakeStarter(load_delay=0.05)
    ctx = build_context(NeuronConfig(harness=HarnessOptions(vllm=options)), starter, nvml=NoGpu())
    models = ModelsConfig(
        models=(ModelProfile(id="org/tiny", vram_mb=300, max_model_len=256, aliases=("tiny",)),)
    )
    async with serving(create_app(ctx)) as neuron_url:
        config = GatewayConfig(
            gateway=GatewayOptions(poll_interval_s=0.05),
            neurons=(NeuronPeer(name="box", endpoint=neuron_url),),
        )
        async with running_gateway(config, models) as gateway:
            oai = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
            ant = anthropic.AsyncAnthropic(base_url=gateway.url, api_key="x", max_retries=0)
            async with oai, ant:
                hi = [{"role": "user", "content": "hi"}]
                await oai.chat.completions.create(model="tiny", messages=hi, max_tokens=3)  # type: ignore[arg-type]
                stream = await oai.chat.completions.create(
                    model="tiny",
                    messages=hi,  # type: ignore[arg-type]
                    max_tokens=4,
                    stream=True,
                )
                async for _ in stream:
                    pass
                await ant.messages.create(model="tiny", messages=hi, max_tokens=3)  # type: ignore[arg-type]
                with pytest.raises(openai.NotFoundError):
                    await oai.chat.completions.create(model="nope", messages=hi)  # type: ignore[arg-type]
            async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
                unload = await http.post("/admin/models/unload", json={"model": "org/tiny"})
                assert unload.status_code == 200, unload.text
            yield Fleet(gateway.metrics_url, neuron_url)


async def exported(*urls: str) -> set[str]:
    """Every sample name the ``/metrics`` of ``urls`` export now."""
    names: set[str] = set()
    async with httpx.AsyncClient(timeout=20) as http:
        for url in urls:
            text = (await http.get(f"{url}/metrics")).text
            names |= {line.split("{")[0].split(" ")[0] for line in text.splitlines()}
    return {name for name in names if name and not name.startswith("#")}


async def test_every_dashboard_query_names_a_metric_a_live_metrics_exports(
    tmp_path: Path,
) -> None:
    async with driven_fleet(tmp_path) as fleet:
        names = await exported(fleet.gateway_metrics, fleet.neuron)
    missing = dashboard_metrics() - names
    assert not missing, f"the dashboard queries metrics nobody exports: {sorted(missing)}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape_config(gateway_metrics: str, neuron: str) -> str:
    """The shipped prometheus.yml with the test's targets and a 1 s interval."""
    text = (PROMETHEUS / "prometheus.yml").read_text()
    gateway_target = gateway_metrics.removeprefix("http://")
    neuron_target = neuron.removeprefix("http://")
    text = text.replace("- gateway.example:31314", f"- {gateway_target}")
    text = text.replace("- gpu-1.example:13131", f"- {neuron_target}")
    text = text.replace("          - gpu-2.example:13131\n", "")
    text = text.replace("scrape_interval: 15s", "scrape_interval: 1s")
    assert ".example:" not in text
    return text


async def test_prometheus_scrapes_every_metric_the_dashboard_queries(tmp_path: Path) -> None:
    prometheus = debian_tool("prometheus", "prometheus")
    log_path = tmp_path / "prometheus.log"
    async with driven_fleet(tmp_path / "models") as fleet:
        config = tmp_path / "prometheus.yml"
        config.write_text(scrape_config(fleet.gateway_metrics, fleet.neuron))
        shutil.copy(PROMETHEUS / "cortex-alerts.yml", tmp_path / "cortex-alerts.yml")
        url = f"http://127.0.0.1:{free_port()}"
        log = log_path.open("w")
        process = await asyncio.create_subprocess_exec(
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log.fileno(),
        )
        try:
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:

                async def values(query: str) -> list[object]:
                    try:
                        answer = await http.get("/api/v1/query", params={"query": query})
                    except httpx.TransportError:
                        return []  # not listening yet
                    if answer.status_code == 503:
                        return []  # still starting
                    body = answer.json()
                    assert body["status"] == "success", (query, body)
                    result: list[object] = body["data"]["result"]
                    return result

                async def both_up() -> bool:
                    up = await values('up{job=~"cortex-gateway|neuron"} == 1')
                    return len(up) == 2

                await eventually(both_up, within=60)
                wanted = sorted(dashboard_metrics())

                async def every_metric_sampled() -> bool:
                    return all([await values(name) for name in wanted])

                await eventually(every_metric_sampled, within=30)
                for name in wanted:
                    assert await values(name), name
                # The neurons' node label comes from the relabelling, the gateway's from itself.
                (neuron_up,) = await values('up{job="neuron"}')
                assert isinstance(neuron_up, dict)
                assert neuron_up["metric"]["node"] == "127.0.0.1"
                # Every dashboard query is valid PromQL, with Grafana's variables filled in.
                for query in dashboard_queries():
                    filled = query.replace("$__rate_interval", "1m").replace("$model", ".*")
                    await values(filled)
                # The rules loaded and evaluate.
                rules = (await http.get("/api/v1/rules")).json()["data"]["groups"]
                assert {r["name"] for g in rules for r in g["rules"]} >= {
                    "CortexNodeDown",
                    "CortexModelLoadFailing",
                    "CortexHighErrorRate",
                    "CortexSlowFirstToken",
                }
        finally:
            process.terminate()
            await process.wait()
            log.close()
