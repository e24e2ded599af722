"""Auth against both daemons as processes (issue 14, DESIGN §4's auth matrix), route by route
from their own route tables, so a new route is covered the day it is added: a missing or wrong
key is 401 in the route's dialect, a client key on an admin route (the status page's buttons
included) is 403, the neuron wants its token everywhere but `/health`, and no key or token ever
shows in a log, `/fleet`, `/ui/state` or the metrics."""

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cortex_core.config import NeuronConfig
from cortex_gateway.routes import routes as gateway_routes
from cortex_neuron.app import build_context, create_app
from cortex_neuron.engine.fake import FakeStarter

from .conftest import NoGpu
from .daemons import DOUBLE_TOKEN, KEYS, NEURON_TOKEN, Stack, serving_stack
from .test_bad_input import check_envelope

pytestmark = pytest.mark.timeout(120)

OPEN_AT_THE_GATEWAY = {"/", "/health", "/ui", "/ui/static/{name}"}  # DESIGN §4: no data there
PARAMS = {"model_id": "org/a", "name": "n1", "action": "uncordon"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with serving_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: PARAMS[m[1]], path)


def _table(routes: list[Any]) -> list[tuple[str, str]]:
    return [
        (method, route.path)
        for route in routes
        for method in sorted(route.methods or {"GET"})
        if method != "HEAD"
    ]


GATEWAY = [r for r in _table(gateway_routes()) if r[1] not in OPEN_AT_THE_GATEWAY]
NEURON = [
    r
    for r in _table(
        list(create_app(build_context(NeuronConfig(), FakeStarter(), nvml=NoGpu())).routes)
    )
    if r[1] != "/health"
]


def _ask(url: str, method: str, path: str, key: str | None, **headers: str) -> httpx.Response:
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return httpx.request(method, url + _concrete(path), json={}, headers=headers, timeout=20)


@pytest.mark.parametrize(("method", "path"), GATEWAY, ids=[f"{m} {p}" for m, p in GATEWAY])
def test_every_gateway_route_refuses_a_missing_or_wrong_key(
    stack: Stack, method: str, path: str
) -> None:
    anthropic = path.startswith("/v1/messages")
    for key in (None, KEYS["wrong"]):
        response = _ask(stack.gateway.url, method, path, key)
        assert response.status_code == 401, (key, response.text)
        error = check_envelope(response, anthropic)
        assert error["type"] == "authentication_error"
    wrong_x_api_key = _ask(stack.gateway.url, method, path, None, **{"x-api-key": KEYS["wrong"]})
    assert wrong_x_api_key.status_code == 401


ADMIN = [
    (method, path.replace("{action}", action))
    for method, path in GATEWAY
    if path.startswith("/admin/")
    for action in (("cordon", "uncordon", "drain") if "{action}" in path else ("",))
]


@pytest.mark.parametrize(("method", "path"), ADMIN, ids=[p for _, p in ADMIN])
def test_a_client_key_is_refused_on_admin_routes(stack: Stack, method: str, path: str) -> None:
    """The status page's buttons are these routes: a client key may see the page, not act."""
    url = stack.gateway.url + path.replace("{name}", "n1")
    refused = httpx.request(
        method, url, json={"model": "org/a"}, headers={"x-api-key": KEYS["client"]}
    )
    assert refused.status_code == 403, refused.text
    assert check_envelope(refused, anthropic=False)["type"] == "permission_error"
    state = httpx.get(stack.gateway.url + "/fleet", headers={"x-api-key": KEYS["client"]}).json()
    assert not [n for n in state["nodes"] if n["cordoned"] or n["draining"]]  # nothing was done


@pytest.mark.parametrize(("method", "path"), NEURON, ids=[f"{m} {p}" for m, p in NEURON])
def test_every_neuron_route_but_health_wants_its_token(
    stack: Stack, method: str, path: str
) -> None:
    for key in (None, KEYS["wrong"], KEYS["client"]):
        response = _ask(stack.neuron.url, method, path, key)
        assert response.status_code == 401, (key, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        check_envelope(response, anthropic=False)
    assert _ask(stack.neuron.url, "GET", "/health", None).status_code == 200


def test_no_key_or_token_is_ever_shown(stack: Stack) -> None:
    """Each key is used, right and wrong, in both headers; then every place that reports
    anything is searched for it: the three logs, `/fleet`, `/ui/state`, both metrics."""
    client, admin = ({"authorization": f"Bearer {KEYS[k]}"} for k in ("client", "admin"))
    chat = {"model": "org/b", "messages": [{"role": "user", "content": "hi"}]}
    gw = stack.gateway.url
    assert httpx.post(gw + "/v1/chat/completions", json=chat, headers=client).status_code == 200
    message = {**chat, "model": "org/a", "max_tokens": 4}
    sent = httpx.post(gw + "/v1/messages", json=message, headers={"x-api-key": KEYS["client"]})
    assert sent.status_code == 200
    assert httpx.post(gw + "/admin/nodes/d1/uncordon", headers=admin).status_code == 200
    for header in ("authorization", "x-api-key"):
        value = KEYS["wrong"] if header == "x-api-key" else f"Bearer {KEYS['wrong']}"
        assert httpx.get(gw + "/v1/models", headers={header: value}).status_code == 401
    assert httpx.get(stack.neuron.url + "/models", headers=client).status_code == 401
    shown = [
        stack.gateway.text(),
        stack.neuron.text(),
        stack.double.text(),
        httpx.get(gw + "/fleet", headers=admin).text,
        httpx.get(gw + "/ui/state", headers=admin).text,
        httpx.get(gw + "/ui/state", headers=client).text,
        httpx.get(stack.gateway.metrics_url + "/metrics").text,
        httpx.get(
            stack.neuron.url + "/metrics", headers={"authorization": f"Bearer {NEURON_TOKEN}"}
        ).text,
    ]
    assert "/v1/chat/completions 200" in shown[0]  # the log holds the requests searched
    for secret in (*KEYS.values(), NEURON_TOKEN, DOUBLE_TOKEN):
        assert not [text for text in shown if secret in text], secret
