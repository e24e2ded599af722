"""Bad input against both daemons as their own processes (issue 14): the corpus under corpus/,
one case a request, and a fuzz of request bodies.

The stack is :func:`daemons.serving_stack`: an OpenAI body the gateway passes on is judged by
the neuron as vLLM would; the neuron's model dir holds symlink traps. Every answer must be the
case's status in the route's envelope (OpenAI, or Anthropic on `/v1/messages*`), never a
traceback, and the daemon must still answer `/health` afterwards with no traceback in its log.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from .daemons import KEYS, NEURON_TOKEN, Daemon, Stack, serving_stack

pytestmark = pytest.mark.timeout(120)

CORPUS = Path(__file__).parent / "corpus"
OPENAI_ERROR = {"message", "type", "code", "param"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with serving_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


def _cases() -> list[Any]:
    return [
        pytest.param(file.stem, case, id=f"{file.stem}: {case['name']}")
        for file in sorted(CORPUS.glob("*.json"))
        for case in json.loads(file.read_text(encoding="utf-8"))
    ]


def _body(case: dict[str, Any]) -> bytes:
    if "hex" in case:
        return bytes.fromhex(case["hex"])
    if "text" in case:
        return str(case["text"]).encode()
    if "json" not in case:
        return b""
    value = case["json"]
    if "pad_to" in case:
        value = {**value, "padding": "x" * case["pad_to"]}
    return json.dumps(value).encode()


def _headers(case: dict[str, Any], neuron: bool) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    key = case.get("key", "token" if neuron else "client")
    if key != "none":
        secret = NEURON_TOKEN if key == "token" else KEYS[key]
        headers["authorization"] = f"Bearer {secret}"
    if "header_bytes" in case:
        headers["x-filler"] = "f" * case["header_bytes"]
    return {**headers, **case.get("headers", {})}


def check_envelope(response: httpx.Response, anthropic: bool) -> dict[str, Any]:
    """The error object of ``response``, asserting the envelope of its dialect."""
    body = response.json()
    if anthropic:
        assert body["type"] == "error", body
        assert set(body["error"]) == {"type", "message"}, body
    else:
        assert set(body) == {"error"}, body
        assert set(body["error"]) == OPENAI_ERROR, body
        assert isinstance(body["error"]["code"], str), body
    assert isinstance(body["error"]["message"], str), body
    assert body["error"]["message"], body
    return dict(body["error"])


def logs(stack: Stack) -> list[int]:
    """How long each daemon's log is now."""
    return [len(d.text()) for d in (stack.gateway, stack.neuron, stack.double)]


def check_still_answers(stack: Stack, daemon: Daemon, logged: list[int]) -> None:
    """``daemon`` answers `/health`, and no daemon logged a traceback since ``logged`` (so one
    case's failure is that case's alone; a gateway case may reach the neuron)."""
    assert httpx.get(daemon.url + "/health").status_code == 200
    for each, start in zip((stack.gateway, stack.neuron, stack.double), logged, strict=True):
        assert "Traceback" not in each.text()[start:], each.log


@pytest.mark.parametrize(("corpus", "case"), _cases())
def test_bad_input(stack: Stack, corpus: str, case: dict[str, Any]) -> None:
    on_neuron = corpus.startswith("neuron")
    daemon = stack.neuron if on_neuron else stack.gateway
    logged = logs(stack)
    response = httpx.request(
        case.get("method", "POST"),
        daemon.url + case["path"],
        content=_body(case),
        headers=_headers(case, on_neuron),
        timeout=20,
    )
    assert response.status_code == case["status"], response.text
    assert b"Traceback" not in response.content
    if case.get("envelope", True):
        anthropic = not on_neuron and case["path"].startswith("/v1/messages")
        error = check_envelope(response, anthropic)
        if "code" in case:
            assert error["code"] == case["code"], error
        if "error_type" in case:
            assert error["type"] == case["error_type"], error
    check_still_answers(stack, daemon, logged)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_model = st.sampled_from(["org/a", "org/b", "org/nope", "../b", ""]) | _json
_body_fields = st.fixed_dictionaries(
    {},
    optional={
        "model": _model,
        "messages": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "role": st.sampled_from(["user", "assistant", "x"]) | _json,
                    "content": st.text(max_size=10) | _json,
                },
            ),
            max_size=3,
        )
        | _json,
        "prompt": st.text(max_size=10) | _json,
        "input": st.text(max_size=10) | _json,
        "max_tokens": st.integers(-5, 40) | _json,
        "stream": st.booleans() | _json,
        "system": _json,
        "tools": _json,
    },
)
_bodies = (
    _body_fields.map(lambda d: json.dumps(d).encode())
    | _json.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=40)
)
GATEWAY_ROUTES = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
]
NEURON_ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/tokenize"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    on_neuron=st.booleans(),
    route=st.integers(0, 4),
    body=_bodies,
)
def test_fuzzed_bodies_never_break_a_daemon(
    stack: Stack, on_neuron: bool, route: int, body: bytes
) -> None:
    """Any body on an inference route (lifecycle routes are left out: a fuzzed spec may load):
    an answer below 500 in the route's envelope, and the daemon still answers."""
    daemon = stack.neuron if on_neuron else stack.gateway
    logged = logs(stack)
    path = (NEURON_ROUTES if on_neuron else GATEWAY_ROUTES)[route % (4 if on_neuron else 5)]
    secret = NEURON_TOKEN if on_neuron else KEYS["client"]
    response = httpx.post(
        daemon.url + path,
        content=body,
        headers={"content-type": "application/json", "authorization": f"Bearer {secret}"},
        timeout=20,
    )
    assert response.status_code < 500, response.text
    assert b"Traceback" not in response.content
    if response.status_code >= 400:
        check_envelope(response, not on_neuron and path.startswith("/v1/messages"))
    check_still_answers(stack, daemon, logged)
