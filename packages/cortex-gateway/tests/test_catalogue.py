"""/v1/models and /v1/models/{id}: what the fleet can serve now, and the router agrees."""

from typing import Any

import aiohttp
import pytest

from cortex_core.config import ModelProfile, ModelsConfig
from cortex_gateway.testing import FakeNeuron, fleet_config, running_gateway

pytestmark = pytest.mark.timeout(30)

MODELS = ModelsConfig(
    models=(
        ModelProfile(id="org/b", vram_mb=2000, max_model_len=8192, aliases=("bee", "b2")),
        ModelProfile(id="org/huge", vram_mb=100000),
        ModelProfile(id="org/nowhere", vram_mb=1000),
    )
)


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        return r.status, await r.json()


async def test_the_list_holds_what_can_be_served_with_locations_and_aliases(client):
    async with (
        FakeNeuron(["org/a", "org/b", "org/huge"], loaded=["org/a"]) as n1,
        FakeNeuron(["org/b"]) as n2,
        running_gateway(fleet_config(n1, n2), MODELS) as gw,
    ):
        page = await client(gw.url).models.list()
        _, raw = await get(gw.url + "/v1/models")
    assert [m.id for m in page.data] == ["org/b", "bee", "b2", "org/a"]
    cards = {card["id"]: card for card in raw["data"]}
    assert raw["object"] == "list"
    assert cards["org/a"] == {
        "id": "org/a",
        "object": "model",
        "created": 0,
        "owned_by": "cortex",
        "max_model_len": 4096,
        "locations": [{"node": "n1", "status": "loaded"}],
    }
    assert cards["bee"]["locations"] == [
        {"node": "n1", "status": "available"},
        {"node": "n2", "status": "available"},
    ]
    assert cards["bee"]["max_model_len"] == 8192  # models.toml's, until it is loaded


async def test_one_model_by_id_alias_or_slash_and_unknown_ones_are_404(neuron, client):
    async with running_gateway(fleet_config(neuron), MODELS) as gw:
        sdk = client(gw.url)
        by_id = await sdk.models.retrieve("org/a")
        _, by_alias = await get(gw.url + "/v1/models/bee")
        statuses = [
            (await get(gw.url + f"/v1/models/{name}"))[0]
            for name in ("org/huge", "org/nowhere", "org/unknown")
        ]
        bad, body = await get(gw.url + "/v1/models/a..b/c/d")
    assert by_id.id == "org/a"
    assert by_alias["id"] == "bee"
    assert by_alias["locations"] == [{"node": "n1", "status": "available"}]
    assert statuses == [404, 404, 404]
    assert (bad, body["error"]["code"]) == (400, "invalid_model_id")


async def test_a_model_too_big_or_on_no_node_is_refused_like_an_unknown_one(neuron):
    async with (
        FakeNeuron(["org/huge"]) as small,
        running_gateway(fleet_config(neuron, small), MODELS) as gw,
        aiohttp.ClientSession() as session,
    ):
        answers = []
        for model in ("org/huge", "org/nowhere"):
            async with session.post(
                gw.url + "/v1/chat/completions", json={"model": model, "messages": []}
            ) as r:
                answers.append((r.status, (await r.json())["error"]["code"]))
    assert answers == [(404, "model_not_found"), (404, "model_not_found")]
    assert small.loads == []


async def test_the_max_model_len_of_a_loaded_model_is_the_neurons(client):
    async with (
        FakeNeuron(["org/b"], loaded=["org/b"]) as fake,
        running_gateway(fleet_config(fake), MODELS) as gw,
    ):
        _, card = await get(gw.url + "/v1/models/org/b")
    assert card["max_model_len"] == 4096
