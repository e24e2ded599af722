"""Bad input against both daemons as their own processes (issue 14): the corpus under corpus/,
one case a request, and a fuzz of request bodies.

One `cortex serve` fronts two nodes: the gateway's test double (node d1, `org/a` loaded) and a
real `neuron serve` on its fake engine (node n1, `org/b` loaded), so an OpenAI body the gateway
passes on is judged by the neuron as vLLM would. The neuron's model dir holds symlink traps.
Every answer must be the case's status in the route's envelope (OpenAI, or Anthropic on
`/v1/messages*`), never a traceback, and the daemon must still answer `/health` afterwards with
no traceback in its log.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cortex_neuron.testing import fake_model

from .daemons import Daemon, gateway_args, running

pytestmark = pytest.mark.timeout(120)

CORPUS = Path(__file__).parent / "corpus"
NEURON_TOKEN = "neuron-token"
KEYS = {"client": "client-key", "admin": "admin-key", "wrong": "not-a-key"}
OPENAI_ERROR = {"message", "type", "code", "param"}


@dataclass
class Stack:
    gateway: Daemon
    neuron: Daemon
    double: Daemon


def _model_dir(root: Path) -> Path:
    """`org/a`, `org/b`, and links a client must not be able to load through."""
    models = root / "models"
    for model_id in ("org/a", "org/b"):
        fake_model(models, model_id)
    outside = fake_model(root / "elsewhere", "org/secret")
    (models / "org" / "linked").symlink_to(outside)
    (models / "org" / "config-linked").mkdir()
    (models / "org" / "config-linked" / "config.json").symlink_to(outside / "config.json")
    (models / "escape").symlink_to(outside.parent)
    (models / "org" / "empty").mkdir()
    return models


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    (root / "neuron.toml").write_text(
        f'host = "127.0.0.1"\nport = 0\nauth_token = "{NEURON_TOKEN}"\n'
        f'[harness.vllm]\nmodel_dirs = ["{_model_dir(root)}"]\nhf_cache = "{root / "hf"}"\n'
        "cpu_memory_mb = 4000\ndefault_memory_mb = 500\n",
        encoding="utf-8",
    )
    neuron_args = ["-c", str(root / "neuron.toml")]
    double_args = ["--token", "double-token", "--loaded", "org/a"]
    with (
        running("neuron", neuron_args, root / "neuron.log") as neuron,
        running("double", double_args, root / "double.log") as double,
    ):
        headers = {"Authorization": f"Bearer {NEURON_TOKEN}"}
        loaded = httpx.post(
            neuron.url + "/models/load", json={"model_id": "org/b"}, headers=headers
        )
        assert loaded.status_code == 200, loaded.text
        (root / "models.toml").write_text(
            '[[models]]\nid = "org/a"\n[[models]]\nid = "org/b"\n', encoding="utf-8"
        )
        (root / "cortex.toml").write_text(
            'models_config = "models.toml"\n'
            "[gateway]\npoll_interval_s = 0.2\nmax_body_bytes = 65536\n"
            f"[auth]\napi_keys = ['{KEYS['client']}']\nadmin_keys = ['{KEYS['admin']}']\n"
            f'[[neurons]]\nname = "n1"\nendpoint = "{neuron.url}"\ntoken = "{NEURON_TOKEN}"\n'
            f'[[neurons]]\nname = "d1"\nendpoint = "{double.url}"\ntoken = "double-token"\n',
            encoding="utf-8",
        )
        with running("gateway", gateway_args(root / "cortex.toml"), root / "gateway.log") as gw:
            _wait_for_models(gw.url, {"org/a", "org/b"})
            yield Stack(gw, neuron, double)


def _wait_for_models(url: str, wanted: set[str]) -> None:
    headers = {"Authorization": f"Bearer {KEYS['client']}"}
    for _ in range(500):
        listed = httpx.get(url + "/v1/models", headers=headers).json()["data"]
        if wanted <= {m["id"] for m in listed if m["locations"]}:
            return
        httpx.get(url + "/health")  # a short pause that also proves the gateway answers
    raise AssertionError(f"the gateway never listed {wanted}")


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


def check_still_answers(daemon: Daemon) -> None:
    assert httpx.get(daemon.url + "/health").status_code == 200
    assert "Traceback" not in daemon.text()


@pytest.mark.parametrize(("corpus", "case"), _cases())
def test_bad_input(stack: Stack, corpus: str, case: dict[str, Any]) -> None:
    on_neuron = corpus.startswith("neuron")
    daemon = stack.neuron if on_neuron else stack.gateway
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
    check_still_answers(daemon)


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
    check_still_answers(daemon)
