"""The fault matrix (issue 14) against the daemons as processes: a neuron SIGKILLed mid-stream
and restarted, neurons that misbehave on the wire, the gateway restarted under a loaded fleet,
and SIGTERM to the gateway under load. Time bounds are the test timeout's; the times a fault
took are printed (`-s`) for docs/reliability.md, never asserted."""

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cortex_gateway.testing import FakeNeuron

from .daemons import KEYS, NEURON_TOKEN, Stack, gateway_args, serving_stack, spawn

pytestmark = pytest.mark.timeout(90)

CLIENT = {"authorization": f"Bearer {KEYS['client']}"}
HI = [{"role": "user", "content": "hi"}]
DIALECTS = {
    "chat": ("/v1/chat/completions", {"messages": HI, "max_tokens": 400}),
    "anthropic": ("/v1/messages", {"messages": HI, "max_tokens": 400}),
    "responses": ("/v1/responses", {"input": "hi", "max_output_tokens": 400}),
}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with serving_stack(tmp_path, token_delay=0.05) as running:
        yield running


def _words(dialect: str, lines: list[str]) -> str:
    """The text a stream's events carry, in their dialect."""
    text = []
    for line in lines:
        if not line.startswith("data: {"):
            continue
        event = json.loads(line[6:])
        if dialect == "chat" and event.get("choices"):
            text.append(event["choices"][0]["delta"].get("content") or "")
        elif event.get("type") == "content_block_delta":
            text.append(event["delta"].get("text", ""))
        elif event.get("type") == "response.output_text.delta":
            text.append(event["delta"])
    return "".join(text)


def _ended_with_its_error(dialect: str, lines: list[str]) -> bool:
    """Whether a stream ended as DESIGN §6 says a failed one does, in ``dialect``."""
    events = [line for line in lines if line.startswith(("data:", "event:"))]
    if dialect == "chat":
        return events[-1] == "data: [DONE]" and '"error"' in events[-2]
    if dialect == "anthropic":
        return events[-2] == "event: error" and '"type":"error"' in events[-1].replace(" ", "")
    return '"type":"error"' in events[-1].replace(" ", "")


async def _stream_until_killed(
    http: httpx.AsyncClient, dialect: str, started: asyncio.Event
) -> tuple[list[str], float]:
    path, body = DIALECTS[dialect]
    lines: list[str] = []
    async with http.stream(
        "POST", path, json={"model": "org/b", "stream": True, **body}, headers=CLIENT
    ) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            lines.append(line)
            if "tok3" in line:
                started.set()
    return lines, time.monotonic()


async def _fleet(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    nodes = (await http.get("/fleet", headers=CLIENT)).json()["nodes"]
    return {n["name"]: n for n in nodes}


def _up_with_org_b(node: dict[str, Any]) -> bool:
    loaded = [m["id"] for m in node["models"] if m["status"] == "loaded"]
    return bool(node["up"]) and "org/b" in loaded


async def test_a_neuron_killed_mid_stream(stack: Stack) -> None:
    """SIGKILL under three streams (one per dialect): each ends with its dialect's error event;
    a model on the other node is still served; n1 goes down after its failed polls, and once
    restarted comes back with its preloaded model learnt from its /models."""
    async with httpx.AsyncClient(base_url=stack.gateway.url, timeout=30) as http:
        started = {d: asyncio.Event() for d in DIALECTS}
        streams = {
            d: asyncio.create_task(_stream_until_killed(http, d, started[d])) for d in DIALECTS
        }
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started.values())), 20)
        stack.neuron.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        for dialect, task in streams.items():
            lines, ended = await task
            print(f"{dialect}: the stream ended {ended - killed:.3f} s after the SIGKILL")
            assert _ended_with_its_error(dialect, lines), (dialect, lines[-4:])
            assert 3 < len(_words(dialect, lines).split()) < 400
        elsewhere = await http.post(
            "/v1/chat/completions", json={"model": "org/a", "messages": HI}, headers=CLIENT
        )
        assert elsewhere.status_code == 200
        while (await _fleet(http))["n1"]["up"]:  # noqa: ASYNC110 - another process's state
            await asyncio.sleep(0.05)
        print(f"n1 marked down {time.monotonic() - killed:.2f} s after the SIGKILL")
        await asyncio.to_thread(stack.start_neuron)
        restarted = time.monotonic()
        while not _up_with_org_b((await _fleet(http))["n1"]):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        print(f"n1 back with org/b loaded {time.monotonic() - restarted:.2f} s after its start")
        again = await http.post(
            "/v1/chat/completions",
            json={"model": "org/b", "messages": HI, "max_tokens": 3},
            headers=CLIENT,
        )
    assert again.status_code == 200, again.text
    assert again.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2"


async def test_a_restarted_gateway_serves_the_fleet_without_reloading(stack: Stack) -> None:
    """DESIGN §7.8: the neurons are the truth; a new gateway learns what is loaded by polling."""
    neuron = {"authorization": f"Bearer {NEURON_TOKEN}"}
    before = (
        await asyncio.to_thread(httpx.get, stack.neuron.url + "/models", headers=neuron)
    ).json()
    assert stack.gateway.stop() == 0
    await asyncio.to_thread(stack.start_gateway)
    async with httpx.AsyncClient(base_url=stack.gateway.url, timeout=30) as http:
        for model in ("org/a", "org/b"):
            body = {"model": model, "messages": HI, "max_tokens": 2}
            answer = await http.post("/v1/chat/completions", json=body, headers=CLIENT)
            assert answer.json()["choices"][0]["message"]["content"].split() == ["tok0", "tok1"]
        metrics = (await http.get(stack.gateway.metrics_url + "/metrics")).text
    after = (
        await asyncio.to_thread(httpx.get, stack.neuron.url + "/models", headers=neuron)
    ).json()
    assert [m["loaded_at"] for m in after] == [m["loaded_at"] for m in before]
    assert "cortex_cold_starts_total{" not in metrics


async def test_sigterm_to_the_gateway_lets_its_streams_finish(stack: Stack) -> None:
    """Streams in flight when SIGTERM lands end whole ([DONE] after every token); the listener
    closes for new connections; the exit status is 0."""

    async def whole_stream(started: asyncio.Event) -> str:
        body = {"model": "org/b", "messages": HI, "max_tokens": 60, "stream": True}
        async with (
            httpx.AsyncClient(base_url=stack.gateway.url, timeout=30) as http,
            http.stream("POST", "/v1/chat/completions", json=body, headers=CLIENT) as r,
        ):
            lines = []
            async for line in r.aiter_lines():
                lines.append(line)
                started.set()
        assert lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]", lines[-3:]
        return _words("chat", lines)

    started = [asyncio.Event() for _ in range(8)]
    streams = [asyncio.create_task(whole_stream(e)) for e in started]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 20)
    stack.gateway.process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    with pytest.raises(httpx.ConnectError):
        await httpx.AsyncClient().get(stack.gateway.url + "/health")
    texts = await asyncio.gather(*streams)
    code = await asyncio.to_thread(stack.gateway.process.wait, 30)
    assert [text.split() for text in texts] == [[f"tok{i}" for i in range(60)]] * 8
    assert code == 0


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[str, FakeNeuron]]:
    """`cortex serve` (bounds of 2 s) over a healthy double (`org/a`) and one to break
    (`org/b`), both in this process so a test can break the second."""
    async with (
        FakeNeuron(["org/a"], loaded=["org/a"]) as good,
        FakeNeuron(["org/b"], loaded=["org/b"]) as bad,
    ):
        (tmp_path / "cortex.toml").write_text(
            "[gateway]\npoll_interval_s = 0.1\nrequest_timeout_s = 2\nidle_timeout_s = 2\n"
            f'[[neurons]]\nname = "good"\nendpoint = "{good.url}"\n'
            f'[[neurons]]\nname = "bad"\nendpoint = "{bad.url}"\n',
            encoding="utf-8",
        )
        gateway = await asyncio.to_thread(
            spawn, "gateway", gateway_args(tmp_path / "cortex.toml"), tmp_path / "gateway.log"
        )
        try:
            async with httpx.AsyncClient(base_url=gateway.url) as http:
                while len((await http.get("/v1/models")).json()["data"]) < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            yield gateway.url, bad
        finally:
            assert await asyncio.to_thread(gateway.stop) == 0
            assert "Traceback" not in gateway.text()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    ("broken", "status", "code"),
    [
        ("silent", 504, "upstream_timeout"),
        ("trickle", 504, "upstream_timeout"),
        ("garbage", 502, "upstream_error"),
        ("malformed", 502, "upstream_error"),
    ],
)
async def test_a_broken_neuron_costs_only_its_own_request(
    fleet: tuple[str, FakeNeuron], broken: str, status: int, code: str, stream: bool
) -> None:
    """A neuron that never answers, answers a byte a second, or answers 200 with something
    that is not its JSON: a bounded wait and a clear error; meanwhile requests to the healthy
    node keep being answered (their slowest time is printed)."""
    url, bad = fleet
    bad.broken = broken
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        body = {"model": "org/b", "messages": HI, "stream": stream}
        victim = asyncio.create_task(http.post("/v1/chat/completions", json=body))
        slowest = 0.0
        while not victim.done():
            began = time.monotonic()
            other = await http.post("/v1/chat/completions", json={"model": "org/a", "messages": HI})
            assert other.status_code == 200
            slowest = max(slowest, time.monotonic() - began)
            await asyncio.sleep(0.05)
        answer = await victim
        print(
            f"{broken} ({'stream' if stream else 'whole'}): {answer.status_code} after "
            f"{answer.elapsed.total_seconds():.2f} s; a request to the healthy node took "
            f"at most {slowest * 1000:.1f} ms meanwhile"
        )
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), answer.text
