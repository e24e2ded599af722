"""The real thing: `neuron serve` running vLLM's CPU build with the tiny model.

These tests need the `[cpu]` extra (nox -s engine installs it). One neuron serves the module's
tests (each engine start costs ~15 s here); the shutdown tests start their own. Each test asks
for the models it needs through a fixture that loads idempotently, so that any test passes
alone or in any order.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest

pytestmark = [pytest.mark.engine, pytest.mark.timeout(600)]

A = "cortex/tiny-chat"
B = "cortex/tiny-chat-b"
MAX_LEN = 512
LONG = 8192  # B's context: its streams run for ~10 s here, long enough to act during them
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


class Neuron:
    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=120)
        self.sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        assert process.stderr is not None
        self.log: list[str] = []
        self._drain = threading.Thread(target=self._keep_log, daemon=True)
        self._drain.start()  # keeps the log pipe from filling up, and the log for failures

    def _keep_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)

    def exited_log(self) -> str:
        """The whole log of a neuron that has exited (read to the pipe's end)."""
        self._drain.join(timeout=10)
        return "".join(self.log)

    def log_tail(self, lines: int = 30) -> str:
        return "".join(self.log[-lines:])

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self._drain.join()
        assert self.process.stderr is not None
        self.process.stderr.close()
        self.http.close()
        self.sdk.close()

    def engines(self) -> list[psutil.Process]:
        children = psutil.Process(self.process.pid).children(recursive=True)
        return [p for p in children if p.name().startswith("VLLM::")]

    def status(self, model: str) -> str:
        return str(next(m["status"] for m in self.http.get("/models").json() if m["id"] == model))

    def metric(self, name: str, model: str) -> float:
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(f'{name}{{model="{model}"'):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no {name} for {model}")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cortex_neuron.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("models")
    build_tiny_model(root, A)
    build_tiny_model(root, B, seed=1)
    return root


def start_neuron(model_dir: Path, folder: Path) -> Neuron:
    config = folder / "neuron.toml"
    config.write_text(
        f'host = "127.0.0.1"\nport = 0\n[harness.vllm]\nmodel_dirs = ["{model_dir}"]\n'
        "cpu_memory_mb = 2048\nmax_queued_per_model = 8\ndrain_timeout_s = 120\n"
        "engine_args = { enforce_eager = true }\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "cortex_neuron", "serve", "-c", str(config), "--log-format", "json"],
        stderr=subprocess.PIPE,
        text=True,
        # Its own process group in this session, like a terminal's job. Not a session of its
        # own: the kernel schedules each session as a group, and vLLM's engine processes spin
        # on sched_yield while they generate, which on two cores starved this test process
        # (runnable, not run) for ~12 s at a time, so streams seemed to arrive all at once.
        process_group=0,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "listening on" in line:
            url = json.loads(line)["message"].removeprefix("listening on ")
            break
    else:
        raise AssertionError("the neuron never listened")
    return Neuron(process, url)


def stop_neuron(neuron: Neuron) -> int:
    neuron.process.send_signal(signal.SIGTERM)
    try:
        return neuron.process.wait(timeout=120)
    finally:
        neuron.close()


@pytest.fixture(scope="module")
def neuron(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Neuron]:
    running = start_neuron(model_dir, tmp_path_factory.mktemp("neuron"))
    yield running
    assert stop_neuron(running) == 0


def load(neuron: Neuron, model: str, **spec: Any) -> httpx.Response:
    body = {"model_id": model, "memory_mb": 300, "max_model_len": MAX_LEN, **spec}
    return neuron.http.post("/models/load", json=body)


def b_spec() -> dict[str, Any]:
    """B's load: a context long enough to act during its streams, a tool parser, a template."""
    from cortex_neuron.tiny import CHAT_TEMPLATE

    # a system line before the chat, so that B's own template shows in its token counts
    template = "<|im_start|>system\nYou are B.<|im_end|>\n" + CHAT_TEMPLATE
    return {
        "memory_mb": 400,
        "max_model_len": LONG,
        "tool_call_parser": "hermes",
        "chat_template": template,
    }


def unload(neuron: Neuron, model: str) -> None:
    """Make sure ``model`` is not loaded (forced: a test that needs it gone owns the neuron)."""
    response = neuron.http.post("/models/unload", json={"model_id": model, "force": True})
    assert response.status_code in (200, 404), response.text


def spares(neuron: Neuron) -> list[psutil.Process]:
    """The neuron's warm spare and the spare inside it: processes not yet an engine's."""
    children = psutil.Process(neuron.process.pid).children(recursive=True)
    return [
        p
        for p in children
        if "cortex_neuron.engine.spare" in " ".join(_cmdline(p))
        and p.status() != psutil.STATUS_ZOMBIE
    ]


def armed_spares(neuron: Neuron) -> list[psutil.Process]:
    """The spare, once armed (a few seconds after the last load, so as not to slow it)."""
    deadline = time.monotonic() + 30
    while len(found := spares(neuron)) < 2:
        assert time.monotonic() < deadline, "no spare was armed"
        time.sleep(0.2)
    return found


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return list(process.cmdline())
    except psutil.Error:
        return []


def engine_cores(neuron: Neuron) -> int:
    return len([p for p in neuron.engines() if p.name().startswith("VLLM::EngineCore")])


@pytest.fixture
def model_a(neuron: Neuron) -> str:
    """A, loaded (a no-op when it already is; a reload after a test killed it)."""
    response = load(neuron, A)
    assert response.status_code == 200, response.text
    return A


@pytest.fixture
def model_b(neuron: Neuron) -> str:
    """B, loaded with :func:`b_spec`."""
    response = load(neuron, B, **b_spec())
    assert response.status_code == 200, response.text
    return B


def long_stream(model: str) -> dict[str, Any]:
    """A streamed chat of ~8,000 tokens: ~10 s here, long enough to act while it runs."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": LONG - 100,
        "ignore_eos": True,
        "stream": True,
    }


def test_five_concurrent_loads_start_one_engine_and_health_answers(neuron: Neuron) -> None:
    unload(neuron, A)
    cores = engine_cores(neuron)
    loads_before = _loads_total(neuron)
    answered: list[int] = []
    with ThreadPoolExecutor(5) as pool:
        loads = [pool.submit(load, neuron, A) for _ in range(5)]
        while not all(f.done() for f in loads):
            # the control plane answers during an engine start (how fast is a benchmark's
            # question, not a test's)
            answered.append(neuron.http.get("/health").status_code)
            time.sleep(0.05)
    assert [f.result().status_code for f in loads] == [200] * 5
    assert answered
    assert set(answered) == {200}
    assert engine_cores(neuron) == cores + 1
    assert _loads_total(neuron) == loads_before + 1


def _loads_total(neuron: Neuron) -> float:
    for line in neuron.http.get("/metrics").text.splitlines():
        if line.startswith(f'neuron_model_loads_total{{model="{A}",result="ok"'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_chat(neuron: Neuron, model_a: str) -> None:
    reply = neuron.sdk.chat.completions.create(
        model=A, messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    assert reply.choices[0].finish_reason in ("length", "stop")
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.usage is not None
    assert reply.usage.completion_tokens <= 8
    assert reply.usage.prompt_tokens > 0


def test_streamed_chat(neuron: Neuron, model_a: str) -> None:
    stream = neuron.sdk.chat.completions.create(
        model=A,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 8


def test_completions(neuron: Neuron, model_a: str) -> None:
    reply = neuron.sdk.completions.create(model=A, prompt="def main():", max_tokens=5)
    assert reply.usage is not None
    assert reply.usage.completion_tokens <= 5
    stream = neuron.sdk.completions.create(
        model=A, prompt="def main():", max_tokens=5, stream=True, extra_body={"ignore_eos": True}
    )
    assert len([c for c in stream if c.choices]) == 5


def test_max_tokens_32000_is_lowered_to_the_context_left(neuron: Neuron, model_a: str) -> None:
    reply = neuron.sdk.chat.completions.create(
        model=A,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=32000,
        extra_body={"ignore_eos": True},
    )
    assert reply.usage is not None
    assert reply.usage.total_tokens == MAX_LEN
    assert reply.choices[0].finish_reason == "length"


def test_a_prompt_longer_than_the_context_is_refused(neuron: Neuron, model_a: str) -> None:
    body = {"model": A, "messages": [{"role": "user", "content": "x " * 2000}]}
    response = neuron.http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"model": "cortex/tiny-chat", "messages": [', "invalid_request"),
        (b'{"model": "cortex/tiny-chat", "messages": "hi"}', "invalid_request"),
        (b'{"model": "cortex/tiny-chat", "messages": [], "max_tokens": -1}', "invalid_request"),
        (
            b'{"model": "cortex/tiny-chat", "messages": [{"role": "user", "content": "x"}], '
            b'"max_tokens": -1}',
            "invalid_request",
        ),
        (
            b'{"model": "cortex/tiny-chat", "messages": [{"role": "user", "content": "x"}], '
            b'"temperature": "hot"}',
            "invalid_request",
        ),
        (b'{"model": "../x", "messages": []}', "invalid_model_id"),
        (b'{"model": "/etc", "messages": []}', "invalid_model_id"),
    ],
)
def test_bad_chat_input(neuron: Neuron, model_a: str, body: bytes, code: str) -> None:
    response = neuron.http.post("/v1/chat/completions", content=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code
    assert "Traceback" not in response.text
    assert neuron.http.get("/health").status_code == 200


def test_tools_without_a_parser_are_answered_as_text(neuron: Neuron, model_a: str) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    choices: list[Any] = ["auto", "required", named]
    for choice in choices:
        reply = neuron.sdk.chat.completions.create(
            model=A,
            messages=[{"role": "user", "content": "weather in Oslo?"}],
            tools=TOOLS,
            tool_choice=choice,
            max_tokens=8,
        )
        assert isinstance(reply.choices[0].message.content, str)
        assert not reply.choices[0].message.tool_calls


def test_tokenize(neuron: Neuron, model_a: str) -> None:
    messages = [{"role": "user", "content": "hello there"}]
    plain = neuron.http.post("/tokenize", json={"model": A, "messages": messages}).json()
    with_tools = neuron.http.post(
        "/tokenize", json={"model": A, "messages": messages, "tools": TOOLS}
    ).json()
    assert plain["max_model_len"] == MAX_LEN
    assert with_tools["count"] > plain["count"] > 2


def test_two_models_at_once_within_their_budgets(neuron: Neuron, model_a: str) -> None:
    unload(neuron, B)
    # B gets a chat template of its own from the load request
    response = load(neuron, B, **b_spec())
    assert response.status_code == 200
    health = neuron.http.get("/health").json()
    assert health["devices"][0]["memory_used_mb"] == 700
    assert len([p for p in neuron.engines() if p.name().startswith("VLLM::EngineCore")]) == 2
    for model in (A, B):
        reply = neuron.sdk.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert reply.model == model
    again = load(neuron, A, memory_mb=300)
    assert again.status_code == 200  # already loaded: no second engine
    assert len([p for p in neuron.engines() if p.name().startswith("VLLM::EngineCore")]) == 2
    messages = [{"role": "user", "content": "hello"}]
    counts = {
        model: neuron.http.post("/tokenize", json={"model": model, "messages": messages}).json()
        for model in (A, B)
    }
    assert counts[B]["count"] > counts[A]["count"]  # B's template is in effect
    assert counts[B]["max_model_len"] == LONG


def test_the_tiny_model_is_built_the_same_every_time_and_cached(
    model_dir: Path, tmp_path: Path
) -> None:
    from cortex_neuron.tiny import build_tiny_model

    again = build_tiny_model(tmp_path, A)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja"):
        assert (again / name).read_bytes() == (model_dir / A / name).read_bytes(), name
    written = (again / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(tmp_path, A) == again
    assert (again / "model.safetensors").stat().st_mtime_ns == written
    assert (tmp_path / B).exists() is False
    other = build_tiny_model(tmp_path, B, seed=1)
    assert (other / "model.safetensors").read_bytes() != (again / "model.safetensors").read_bytes()


def test_tool_calls_with_a_parser(neuron: Neuron, model_a: str, model_b: str) -> None:
    # The weights are random, so structured output makes the model write a call; the hermes
    # parser then has to turn that text into `tool_calls`, streaming and not.
    call = {"name": "get_weather", "arguments": {"city": "Oslo"}}
    forced = {
        "structured_outputs": {"regex": re.escape(f"<tool_call>{json.dumps(call)}</tool_call>")}
    }
    messages: list[Any] = [{"role": "user", "content": "weather in Oslo?"}]
    reply = neuron.sdk.chat.completions.create(
        model=B, messages=messages, tools=TOOLS, max_tokens=64, extra_body=forced
    )
    assert reply.choices[0].finish_reason == "tool_calls"
    (tool_call,) = reply.choices[0].message.tool_calls or []
    assert tool_call.function.name == "get_weather"
    assert json.loads(tool_call.function.arguments) == {"city": "Oslo"}
    stream = neuron.sdk.chat.completions.create(
        model=B, messages=messages, tools=TOOLS, max_tokens=64, extra_body=forced, stream=True
    )
    deltas = [c.choices[0].delta for c in stream if c.choices]
    calls = [t for d in deltas for t in d.tool_calls or []]
    assert calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    arguments = "".join(t.function.arguments or "" for t in calls if t.function)
    assert json.loads(arguments) == {"city": "Oslo"}
    as_text = neuron.sdk.chat.completions.create(
        model=A, messages=messages, tools=TOOLS, max_tokens=64, extra_body=forced
    )
    assert not as_text.choices[0].message.tool_calls
    assert json.dumps(call) in (as_text.choices[0].message.content or "")


def test_a_client_that_disconnects_mid_stream_aborts_the_request(
    neuron: Neuron, model_b: str
) -> None:
    body = long_stream(B)
    started = time.monotonic()
    with neuron.http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
        at_lines = time.monotonic() - started
        unfinished = neuron.metric("neuron_engine_unfinished_requests", B)
        at_metric = time.monotonic() - started
        assert unfinished == 1, f"lines at {at_lines:.3f} s, metric at {at_metric:.3f} s"
    deadline = time.monotonic() + 5
    while neuron.metric("neuron_engine_unfinished_requests", B) != 0:
        assert time.monotonic() < deadline, "vLLM kept the request after the client left"
        time.sleep(0.05)
    assert all(m["in_flight"] == 0 for m in neuron.http.get("/health").json()["models"])


def test_unload_of_a_busy_model_is_409_and_drain_waits(
    neuron: Neuron, model_a: str, model_b: str
) -> None:
    engines_before = {p.pid for p in neuron.engines()}
    body = long_stream(B)
    started = time.monotonic()
    with neuron.http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        at_headers = time.monotonic() - started
        lines = response.iter_lines()
        first = next(lines)
        at_first = time.monotonic() - started
        running = neuron.http.get("/health").json()["models"]
        at_health = time.monotonic() - started
        timing = f"headers {at_headers:.3f} first {at_first:.3f} health {at_health:.3f}"
        assert {"id": B, "in_flight": 1, "queued": 0} in running, timing
        busy = neuron.http.post("/models/unload", json={"model_id": B})
        assert busy.status_code == 409, f"first line: {first}\nlog:\n{neuron.log_tail()}"
        assert busy.json()["error"]["code"] == "model_busy"
        with ThreadPoolExecutor(1) as pool:
            drained = pool.submit(
                neuron.http.post, "/models/unload", json={"model_id": B, "drain": True}
            )
            rest = [line for line in lines if line.startswith("data:")]
            assert rest[-1] == "data: [DONE]"
            errors = [line for line in rest if line.startswith('data: {"error"')]
            assert not errors, (errors, neuron.log_tail())
            assert drained.result().status_code == 200
    assert neuron.status(B) == "available"
    gone = engines_before - {p.pid for p in neuron.engines()}
    assert len(gone) >= 2  # B's engine core and its worker
    assert not any(psutil.pid_exists(pid) for pid in gone)
    assert neuron.http.get("/health").json()["devices"][0]["memory_used_mb"] == 300


def test_a_dead_engine_marks_its_model_failed(neuron: Neuron, model_a: str) -> None:
    unload(neuron, B)  # A's engine core is then the only one
    (core,) = [p for p in neuron.engines() if p.name().startswith("VLLM::EngineCore")]
    core.kill()
    deadline = time.monotonic() + 10
    while neuron.status(A) != "failed":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    refused = neuron.http.post(
        "/v1/chat/completions", json={"model": A, "messages": [{"role": "user", "content": "x"}]}
    )
    assert refused.json()["error"]["code"] == "model_not_loaded"
    assert neuron.http.get("/health").json()["devices"][0]["memory_used_mb"] == 0
    assert load(neuron, A).status_code == 200  # and a reload serves again
    reply = neuron.sdk.chat.completions.create(
        model=A, messages=[{"role": "user", "content": "x"}], max_tokens=4
    )
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 4


def test_32_concurrent_streams_all_arrive_whole(neuron: Neuron, model_a: str) -> None:
    tokens = 24

    def stream(i: int) -> tuple[str, int, bool]:
        body = {
            "model": A,
            "messages": [{"role": "user", "content": f"stream {i}"}],
            "max_tokens": tokens,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with httpx.stream(
            "POST", f"{neuron.url}/v1/chat/completions", json=body, timeout=300
        ) as response:
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
        text = "".join(d.get("content") or "" for d in deltas)
        return text, chunks[-1]["usage"]["completion_tokens"], lines[-1] == "data: [DONE]"

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(stream, range(32)))
    assert all(done for _, _, done in results)  # none lost
    assert [count for _, count, _ in results] == [tokens] * 32  # none cut short
    assert all(text for text, _, _ in results)


def test_a_reload_comes_from_the_warm_spare_and_answers_the_same(
    neuron: Neuron, model_a: str
) -> None:
    question = {
        "model": A,
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": 12,
        "temperature": 0,
    }
    first = neuron.http.post("/v1/chat/completions", json=question).json()
    engines_of_a = {p.pid for p in neuron.engines()}
    unload(neuron, B)
    unload(neuron, A)
    assert not any(psutil.pid_exists(pid) for pid in engines_of_a)  # no process outlives it
    waiting = {p.pid for p in armed_spares(neuron)}
    assert len(waiting) == 2  # an engine core and its worker, imported, before any load
    assert load(neuron, A).status_code == 200
    assert waiting == {p.pid for p in neuron.engines()}  # the spare became A's engine
    again = neuron.http.post("/v1/chat/completions", json=question).json()
    assert again["choices"][0]["message"] == first["choices"][0]["message"]
    assert not waiting & {p.pid for p in armed_spares(neuron)}  # another one, for the next load


def test_a_dead_spare_is_passed_over_and_replaced(neuron: Neuron) -> None:
    unload(neuron, B)
    unload(neuron, A)
    dead = armed_spares(neuron)
    for process in dead:
        process.kill()
    psutil.wait_procs(dead, timeout=10)
    assert load(neuron, A).status_code == 200, neuron.log_tail()
    assert neuron.status(A) == "loaded"
    assert not {p.pid for p in dead} & {p.pid for p in neuron.engines()}
    replaced = armed_spares(neuron)
    assert not {p.pid for p in replaced} & {p.pid for p in dead}


def test_an_engine_from_the_spare_binds_its_threads_as_a_cold_one(neuron: Neuron) -> None:
    """vLLM binds its CPU worker's OpenMP threads by variables set around the worker's spawn,
    read as its OpenMP runtime loads: a spare that had imported without them ran unbound, at
    0.6x the tokens/s of a cold engine (benchmarks/neuron.py)."""
    unload(neuron, B)
    unload(neuron, A)
    waiting = {p.pid for p in armed_spares(neuron)}
    assert load(neuron, A).status_code == 200
    assert waiting == {p.pid for p in neuron.engines()}, neuron.log_tail()  # from the spare
    from_the_spare = worker_binding(neuron)
    unload(neuron, A)
    spares = armed_spares(neuron)
    for process in spares:
        process.kill()
    psutil.wait_procs(spares, timeout=10)
    assert load(neuron, A).status_code == 200
    assert from_the_spare == worker_binding(neuron)  # the cold engine's


def worker_binding(neuron: Neuron) -> set[tuple[int, ...]]:
    """The CPUs each thread of the engine's worker may run on."""
    (worker,) = [p for p in neuron.engines() if not p.name().startswith("VLLM::EngineCore")]
    return {tuple(sorted(os.sched_getaffinity(t.id))) for t in worker.threads()}


@pytest.mark.parametrize("to_the_group", [False, True], ids=["pid", "process-group"])
def test_sigterm_during_a_stream(model_dir: Path, tmp_path: Path, to_the_group: bool) -> None:
    neuron = start_neuron(model_dir, tmp_path)
    try:
        assert load(neuron, A, max_model_len=LONG).status_code == 200
        engines = neuron.engines()
        assert armed_spares(neuron)
        everything = psutil.Process(neuron.process.pid).children(recursive=True)
        # ~15 s here, well inside the drain's 60 s even on a busy machine (a stream of the whole
        # context took ~55 s and was cut by the drain once)
        tokens = LONG // 4
        body = {**long_stream(A), "max_tokens": tokens, "stream_options": {"include_usage": True}}
        with neuron.http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()
            next(lines)
            if to_the_group:
                os.killpg(neuron.process.pid, signal.SIGTERM)
            else:
                neuron.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while not neuron.http.get("/health").json()["draining"]:
                assert time.monotonic() < deadline, "the neuron never started draining"
                time.sleep(0.02)
            refused = neuron.http.post("/v1/chat/completions", json={**body, "stream": False})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "shutting_down"
            rest = [line for line in lines if line.startswith("data:")]
        assert rest[-1] == "data: [DONE]"
        errors = [line for line in rest if line.startswith('data: {"error"')]
        assert not errors, errors
        usage = json.loads(rest[-2].removeprefix("data: "))["usage"]
        assert usage["completion_tokens"] == tokens  # it ran to its end, long after the signal
        assert neuron.process.wait(timeout=120) == 0
        assert engines
        _, left = psutil.wait_procs(everything, timeout=10)
        assert not left, left  # no engine, no spare, no helper of vLLM's
        log = neuron.exited_log()
        assert "force killing" not in log  # vLLM's engine core left within vLLM's own wait
        assert "Traceback" not in log
    finally:
        neuron.close()


def test_responses_create_and_stream(neuron: Neuron, model_a: str) -> None:
    reply = neuron.sdk.responses.create(
        model=A, input="hello", instructions="Be brief.", max_output_tokens=8
    )
    assert reply.usage is not None
    assert 0 < reply.usage.output_tokens <= 8
    assert reply.usage.input_tokens > 0
    assert isinstance(reply.output_text, str)
    stream = neuron.sdk.responses.create(
        model=A, input="hello", max_output_tokens=16, stream=True, extra_body={"ignore_eos": True}
    )
    events = list(stream)
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert deltas  # how many: vLLM merges the tokens a slow reader has not taken into one
    assert [e.sequence_number for e in events] == sorted(e.sequence_number for e in events)
    final = events[-1].response
    assert final.usage is not None
    assert final.usage.output_tokens == 16
    assert final.output_text == "".join(e.delta for e in deltas)
    text = neuron.http.get("/metrics").text
    assert f'neuron_requests_total{{model="{A}",route="responses",status="200"}}' in text


def test_responses_previous_response_id_is_refused(neuron: Neuron, model_a: str) -> None:
    body = {"model": A, "input": "hello", "previous_response_id": "resp_0"}
    answer = neuron.http.post("/v1/responses", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "previous_response_id"


def test_responses_stream_with_a_tool_parser(neuron: Neuron, model_b: str) -> None:
    body = {"model": B, "input": "hi", "max_output_tokens": 16, "ignore_eos": True, "stream": True}
    with neuron.http.stream("POST", "/v1/responses", json=body) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    kinds = [json.loads(line.removeprefix("data: "))["type"] for line in lines]
    assert kinds[0] == "response.created", lines[-1]
    assert kinds[-1] == "response.completed", lines[-1]


def test_responses_client_that_leaves_mid_stream_aborts_the_request(neuron: Neuron) -> None:
    # B with its long context and no tool parser (a parser may hold text back); unloaded after,
    # so that `model_b` loads it with its own spec again
    unload(neuron, B)
    spec = {**b_spec(), "tool_call_parser": None}
    assert load(neuron, B, **spec).status_code == 200
    try:
        body = {
            "model": B,
            "input": "hi",
            "max_output_tokens": LONG - 100,
            "ignore_eos": True,
            "stream": True,
        }
        seen: list[str] = []
        with neuron.http.stream("POST", "/v1/responses", json=body) as response:
            # the iterator is kept: a `for` broken out of would drop it, and closing it closes
            # the connection, so the client would leave before the engine was looked at
            lines = response.iter_lines()
            while "response.output_text.delta" not in seen:
                line = next(lines)
                if line.startswith("event: "):
                    seen.append(line.removeprefix("event: "))
            held = neuron.metric("neuron_engine_unfinished_requests", B)
            assert held == 1, f"events {seen}"
        deadline = time.monotonic() + 5
        while neuron.metric("neuron_engine_unfinished_requests", B) != 0:
            assert time.monotonic() < deadline, "vLLM kept the request after the client left"
            time.sleep(0.05)
        assert all(m["in_flight"] == 0 for m in neuron.http.get("/health").json()["models"])
        text = neuron.http.get("/metrics").text
        assert f'neuron_requests_total{{model="{B}",route="responses",status="499"}} 1.0' in text
    finally:
        unload(neuron, B)
