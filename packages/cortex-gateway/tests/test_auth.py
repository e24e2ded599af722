"""DESIGN §4's auth matrix, row by row, with keys in either header."""

import aiohttp
import pytest

from cortex_core.config import AuthOptions
from cortex_gateway.auth import Keys
from cortex_gateway.testing import fleet_config, running_gateway

pytestmark = pytest.mark.timeout(30)

CLIENT, ADMIN = "client-key", "admin-key"
NONE, ONLY_CLIENT, ONLY_ADMIN, BOTH = (
    AuthOptions(),
    AuthOptions(api_keys=(CLIENT,)),
    AuthOptions(admin_keys=(ADMIN,)),
    AuthOptions(api_keys=(CLIENT,), admin_keys=(ADMIN,)),
)
ROUTES = {
    "health": ("GET", "/health"),
    "root": ("GET", "/"),
    "v1": ("GET", "/v1/models"),
    "fleet": ("GET", "/fleet"),
    "admin": ("POST", "/admin/models/unload"),
    "ui": ("GET", "/ui"),
    "ui_state": ("GET", "/ui/state"),
}
# (auth, route, key presented) → status; the admin route answers 404 model_not_loaded once
# it lets the request through.
MATRIX = [
    (NONE, "health", None, 200),
    (NONE, "v1", None, 200),
    (NONE, "fleet", None, 200),
    (NONE, "admin", None, 404),
    (ONLY_CLIENT, "health", None, 200),
    (ONLY_CLIENT, "root", None, 200),
    (ONLY_CLIENT, "v1", None, 401),
    (ONLY_CLIENT, "v1", "wrong", 401),
    (ONLY_CLIENT, "v1", CLIENT, 200),
    (ONLY_CLIENT, "fleet", None, 401),
    (ONLY_CLIENT, "fleet", CLIENT, 200),
    (ONLY_CLIENT, "admin", CLIENT, 403),
    (ONLY_CLIENT, "admin", None, 403),
    (ONLY_CLIENT, "ui", None, 200),
    (ONLY_CLIENT, "ui_state", None, 401),
    (ONLY_CLIENT, "ui_state", CLIENT, 200),
    (ONLY_ADMIN, "v1", None, 200),
    (ONLY_ADMIN, "fleet", None, 200),
    (ONLY_ADMIN, "ui_state", None, 200),
    (ONLY_ADMIN, "admin", None, 401),
    (ONLY_ADMIN, "admin", "wrong", 401),
    (ONLY_ADMIN, "admin", ADMIN, 404),
    (BOTH, "health", None, 200),
    (BOTH, "v1", None, 401),
    (BOTH, "v1", CLIENT, 200),
    (BOTH, "v1", ADMIN, 200),
    (BOTH, "fleet", ADMIN, 200),
    (BOTH, "admin", None, 401),
    (BOTH, "admin", CLIENT, 403),
    (BOTH, "admin", ADMIN, 404),
    (BOTH, "ui", None, 200),
    (BOTH, "ui_state", None, 401),
    (BOTH, "ui_state", CLIENT, 200),
    (BOTH, "ui_state", ADMIN, 200),
]


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
async def test_the_auth_matrix(neuron, header):
    for auth in (NONE, ONLY_CLIENT, ONLY_ADMIN, BOTH):
        rows = [row for row in MATRIX if row[0] is auth]
        async with (
            running_gateway(fleet_config(neuron, auth=auth)) as gw,
            aiohttp.ClientSession() as session,
        ):
            for _, route, key, expected in rows:
                method, path = ROUTES[route]
                headers = {}
                if key is not None:
                    headers[header] = f"Bearer {key}" if header == "authorization" else key
                body = {"model": "org/b"} if method == "POST" else None
                async with session.request(method, gw.url + path, json=body, headers=headers) as r:
                    assert (route, key, r.status) == (route, key, expected), auth
                    if r.status in (401, 403):
                        error = (await r.json())["error"]
                        assert error["code"] in ("invalid_api_key", "permission_denied")
                        assert (r.status == 401) == ("WWW-Authenticate" in r.headers)
                async with session.get(gw.metrics_url + "/metrics") as r:
                    assert r.status == 200  # the metrics listener is always open


async def test_the_sdk_sends_its_key_as_a_bearer_token(neuron, client):
    async with running_gateway(fleet_config(neuron, auth=ONLY_CLIENT)) as gw:
        page = await client(gw.url, api_key=CLIENT).models.list()
    assert [m.id for m in page.data] == ["org/a", "org/b"]


def test_a_malformed_authorization_header_is_no_key():
    keys = Keys(ONLY_CLIENT)
    for value in (b"Basic abc", b"Bearer", b"Bearer  "):
        error = keys.check("/v1/models", [(b"authorization", value)])
        assert error is not None
        assert error.message.startswith("No API key")


@pytest.mark.parametrize(
    ("path", "key", "status", "code"),
    [
        ("/v1/chat/completions", None, 401, "invalid_api_key"),
        ("/v1/chat/completions", "wrong", 401, "invalid_api_key"),
        ("/v1/nothing", CLIENT, 404, "not_found"),
        ("/admin/models/load", CLIENT, 403, "permission_denied"),
    ],
)
async def test_refusals_speak_the_routes_dialect(neuron, path, key, status, code):
    headers = {"x-api-key": key} if key else {}
    async with (
        running_gateway(fleet_config(neuron, auth=BOTH)) as gw,
        aiohttp.ClientSession() as session,
        session.post(gw.url + path, json={"model": "org/a"}, headers=headers) as r,
    ):
        body = await r.json()
    assert r.status == status
    # OpenAI's envelope, every member present (DESIGN §6); /v1/messages will speak Anthropic's
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "code", "param"}
    assert body["error"]["code"] == code
