"""The whole stack for real: `cortex serve` in front of `neuron serve` running vLLM's CPU build
with the tiny model. The OpenAI SDK lists models, chats and streams through the gateway; the
first request loads the model on demand. The Anthropic SDK does the same through
`/v1/messages`, and counts tokens exactly on the loaded model."""

import asyncio
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cortex_gateway.testing.claude_code import claude_code, claude_turn

pytestmark = [pytest.mark.engine, pytest.mark.timeout(600)]

MODEL = "cortex/tiny-chat"
LONG = "cortex/tiny-chat-32k"
"""The tiny model with a context long enough for what Claude Code sends (about 28,000 tokens)."""


class Process:
    """A daemon of ours as a subprocess, its log read until it says where it listens."""

    def __init__(self, command: list[str], listening: re.Pattern[str]) -> None:
        self.popen = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            if match := listening.search(line):
                self.url = match[1]
                self.urls = match.groups()
                break
        else:
            raise AssertionError(f"{command[3]} exited before listening")
        self._drain = threading.Thread(target=self.popen.stderr.read, daemon=True)
        self._drain.start()

    def stop(self) -> int:
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=120)
        finally:
            self.popen.kill()
            self.popen.wait()
            self._drain.join()
            assert self.popen.stderr is not None
            self.popen.stderr.close()


@dataclass(frozen=True)
class Stack:
    url: str
    metrics_url: str

    def completion_tokens(self) -> float:
        text = httpx.get(f"{self.metrics_url}/metrics", timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "cortex_completion_tokens_total" and sample.labels["model"] == MODEL
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from cortex_neuron.tiny import build_tiny_model

    folder = tmp_path_factory.mktemp("stack")
    build_tiny_model(folder / "models")
    build_tiny_model(folder / "models", LONG, context=32768)  # Claude Code's prompt fits
    (folder / "neuron.toml").write_text(
        f'host = "127.0.0.1"\nport = 0\n[harness.vllm]\nmodel_dirs = ["{folder / "models"}"]\n'
        "cpu_memory_mb = 1024\nengine_args = { enforce_eager = true }\n"
    )
    neuron = Process(
        [sys.executable, "-m", "cortex_neuron", "serve", "-c", str(folder / "neuron.toml")],
        re.compile(r"listening on (http://\S+)"),
    )
    (folder / "models.toml").write_text(
        f'[[models]]\nid = "{MODEL}"\nvram_mb = 300\nmax_model_len = 512\naliases = ["tiny"]\n'
        f'[[models]]\nid = "{LONG}"\nvram_mb = 300\nmax_model_len = 32768\n'
    )
    (folder / "cortex.toml").write_text(
        'models_config = "models.toml"\n[gateway]\npoll_interval_s = 0.5\n'
        f'[[neurons]]\nname = "local"\nendpoint = "{neuron.url}"\n'
    )
    gateway = Process(
        [
            sys.executable,
            "-m",
            "cortex_cli",
            "serve",
            "-c",
            str(folder / "cortex.toml"),
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        re.compile(r"cortex gateway on (http://\S+), metrics on (http://\S+)/metrics"),
    )
    try:
        yield Stack(*gateway.urls)
    finally:
        assert gateway.stop() == 0
        assert neuron.stop() == 0


def test_models_are_listed_before_anything_is_loaded(stack: Stack) -> None:
    with openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0) as client:
        listed = {m.id for m in client.models.list().data}
    assert {MODEL, "tiny"} <= listed


def test_a_cold_chat_loads_the_model_then_streams(stack: Stack) -> None:
    with openai.OpenAI(
        base_url=f"{stack.url}/v1", api_key="x", max_retries=0, timeout=600
    ) as client:
        reply = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8
        )
        assert reply.usage is not None
        assert 0 < reply.usage.completion_tokens <= 8
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=32000,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        chunks = list(stream)
    contents = [c.choices[0].delta.content for c in chunks if c.choices]
    streamed = sum(1 for c in contents if c)
    assert streamed > 100
    assert all(c.usage is None for c in chunks)  # the usage chunk the gateway asked for is dropped
    # ...but it was asked for: the gateway counted the stream's tokens from it
    assert stack.completion_tokens() >= reply.usage.completion_tokens + streamed
    fleet = httpx.get(f"{stack.url}/fleet", timeout=10).json()
    (model,) = [m for m in fleet["nodes"][0]["models"] if m["id"] == MODEL]
    assert model["status"] == "loaded"
    (listed,) = [m for m in fleet["models"] if m["id"] == MODEL]
    assert listed["aliases"] == ["tiny"]
    assert [location["status"] for location in listed["locations"]] == ["loaded"]


def test_the_anthropic_sdk_through_the_stack(stack: Stack) -> None:
    hello: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hello"}]
    with anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0, timeout=600) as client:
        reply = client.messages.create(
            model="tiny", system="Be brief.", max_tokens=8, messages=hello
        )
        with client.messages.stream(model=MODEL, max_tokens=8, messages=hello) as stream:
            names = [event.type for event in stream]
            streamed = stream.get_final_message()
        counted = client.messages.count_tokens(model=MODEL, system="Be brief.", messages=hello)
    assert 0 < reply.usage.output_tokens <= 8
    assert reply.usage.input_tokens > 0
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert names[0] == "message_start"
    assert names.count("message_start") == 1
    assert names[-2:] == ["message_delta", "message_stop"]
    assert 0 < streamed.usage.output_tokens <= 8
    assert streamed.usage.input_tokens > 0
    assert counted.model_extra == {}  # exact: the model is loaded
    assert counted.input_tokens == reply.usage.input_tokens  # the same chat template, counted


def test_responses_through_the_stack(stack: Stack) -> None:
    with openai.OpenAI(
        base_url=f"{stack.url}/v1", api_key="x", max_retries=0, timeout=600
    ) as client:
        reply = client.responses.create(
            model="tiny", input="hello", instructions="Be brief.", max_output_tokens=8
        )
        stream = client.responses.create(
            model=MODEL,
            input="hello",
            max_output_tokens=16,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        events = list(stream)
    assert reply.usage is not None
    assert 0 < reply.usage.output_tokens <= 8
    assert reply.usage.input_tokens > 0
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    # vLLM merges the tokens a slow reader has not taken yet into one delta (on a busy machine
    # 16 tokens came as 2), so the deltas are counted by what they add up to, not by number
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    final = events[-1].response
    assert deltas
    assert "".join(deltas) == final.output_text
    assert final.usage is not None
    assert final.usage.output_tokens == 16


def test_claude_code_runs_a_turn_against_the_real_neuron(stack: Stack, tmp_path: Path) -> None:
    """Claude Code itself, unmodified: its ~77 KB request (system, tools, thinking, a system turn
    inside messages) through the gateway to vLLM. The tiny model's words are gibberish; what
    counts is that the protocol round-trips with no client error."""
    binary = claude_code(Path(__file__).resolve().parents[2] / ".cache")
    code, out, err = asyncio.run(claude_turn(binary, stack.url, LONG, tmp_path))
    assert code == 0, err
    assert out.strip()  # it printed the streamed answer
    fleet = httpx.get(f"{stack.url}/fleet", timeout=10).json()
    (model,) = [m for m in fleet["nodes"][0]["models"] if m["id"] == LONG]
    assert model["status"] == "loaded"  # loaded on demand by Claude Code's request
