"""The status page: its shell and assets, the JSON it reads (/ui/state) and its buffers."""

import asyncio
import json
from typing import Any

import aiohttp
import anthropic
import pytest

from cortex_core.config import AuthOptions, ModelProfile, ModelsConfig
from cortex_gateway.testing import FakeNeuron, eventually, fleet_config, running_gateway
from cortex_gateway.web.recent import Recent, RequestRecord

pytestmark = pytest.mark.timeout(30)

CLIENT, ADMIN = "client-key", "admin-key"
SECRET = "the prompt text, never kept"


async def get(url: str, key: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()


async def state(url: str, key: str | None = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            url + "/ui/state", headers={"authorization": f"Bearer {key}"} if key else {}
        ) as r,
    ):
        assert r.status == 200
        return await r.json()


async def admin(url: str, path: str, body: object | None = None) -> None:
    async with aiohttp.ClientSession() as session, session.post(url + path, json=body) as r:
        assert r.status == 200, await r.text()


async def test_the_shell_and_its_assets_load_without_a_key_and_hold_no_data(neuron):
    auth = AuthOptions(api_keys=(CLIENT,), admin_keys=(ADMIN,))
    async with running_gateway(fleet_config(neuron, auth=auth)) as gw:
        status, headers, html = await get(gw.url + "/ui")
        assert status == 200
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert headers["content-security-policy"].startswith("default-src 'self'")
        assert b"/ui/static/ui.js" in html
        assert b"/ui/static/ui.css" in html
        assert b"org/a" not in html
        assert b"n1" not in html
        assert b"http://" not in html
        assert b"https://" not in html
        for name, media in (("ui.js", "text/javascript"), ("ui.css", "text/css")):
            status, headers, body = await get(gw.url + "/ui/static/" + name)
            assert status == 200
            assert headers["content-type"].startswith(media)
            assert b"http://" not in body
            assert b"https://" not in body
        assert (await get(gw.url + "/ui/"))[0] == 200  # redirected to /ui, no key needed
        assert (await get(gw.url + "/ui/static/nothing.js"))[0] == 404
        assert (await get(gw.url + "/ui/static/..%2Fpage.py"))[0] == 404
        assert (await get(gw.url + "/ui/state"))[0] == 401
        assert (await get(gw.url + "/ui/state", "wrong"))[0] == 401


@pytest.mark.parametrize(
    ("auth", "key", "admin_role"),
    [
        (AuthOptions(), None, True),
        (AuthOptions(api_keys=(CLIENT,)), CLIENT, False),
        (AuthOptions(admin_keys=(ADMIN,)), None, False),
        (AuthOptions(admin_keys=(ADMIN,)), ADMIN, True),
        (AuthOptions(api_keys=(CLIENT,), admin_keys=(ADMIN,)), CLIENT, False),
        (AuthOptions(api_keys=(CLIENT,), admin_keys=(ADMIN,)), ADMIN, True),
    ],
)
async def test_the_state_says_whether_the_key_may_use_the_admin_routes(
    neuron, auth, key, admin_role
):
    async with running_gateway(fleet_config(neuron, auth=auth)) as gw:
        body = await state(gw.url, key)
    assert body["admin"] is admin_role
    assert body["auth"] is bool(auth.api_keys or auth.admin_keys)


async def test_the_state_holds_the_fleet_view_and_the_queue(neuron):
    models = ModelsConfig(models=(ModelProfile(id="org/a", pinned_on=("n1",)),))
    async with running_gateway(fleet_config(neuron), models) as gw:
        body = await state(gw.url)
        async with aiohttp.ClientSession() as session, session.get(gw.url + "/fleet") as r:
            fleet = await r.json()
    assert set(body) == {"now", "auth", "admin", "fleet", "queued", "requests", "events"}
    for node in (*body["fleet"]["nodes"], *fleet["nodes"]):
        node.pop("last_poll")
    assert body["fleet"] == fleet
    (node,) = body["fleet"]["nodes"]
    assert node["name"] == "n1"
    assert node["devices"][0]["memory_total_mb"] == 24000
    assert node["models"][0]["pinned"] is True
    assert body["queued"] == {}
    assert body["requests"] == body["events"] == []


async def test_requests_are_recorded_with_their_accounting_and_no_prompt(neuron, client):
    async with running_gateway(fleet_config(neuron)) as gw:
        openai_client = client(gw.url)
        await openai_client.chat.completions.create(
            model="org/a", messages=[{"role": "user", "content": SECRET}]
        )
        stream = await openai_client.chat.completions.create(
            model="org/a", messages=[{"role": "user", "content": SECRET}], stream=True
        )
        async for _ in stream:
            pass
        async with anthropic.AsyncAnthropic(
            base_url=gw.url, api_key="none", max_retries=0
        ) as claude:
            await claude.messages.create(
                model="org/a", max_tokens=5, messages=[{"role": "user", "content": SECRET}]
            )
        async with (
            aiohttp.ClientSession() as session,
            session.post(gw.url + "/v1/chat/completions", json={"model": "no/such"}),
        ):
            pass
        status, _, raw = await get(gw.url + "/ui/state")
    assert status == 200
    assert SECRET.encode() not in raw
    body = json.loads(raw)
    unknown, claude_call, streamed, plain = body["requests"]  # newest first
    assert (plain["model"], plain["node"], plain["dialect"], plain["status"]) == (
        "org/a",
        "n1",
        "openai",
        200,
    )
    assert plain["ttft_s"] is None
    assert plain["completion_tokens"] == 3
    assert streamed["ttft_s"] > 0
    assert streamed["completion_tokens"] == 3
    assert streamed["tokens_per_second"] > 0
    assert claude_call["dialect"] == "anthropic"
    assert claude_call["status"] == 200
    assert (unknown["model"], unknown["node"], unknown["status"]) == ("-", "-", 404)
    assert all(r["at"] > 0 and r["seconds"] >= 0 for r in body["requests"])


async def test_loads_and_unloads_are_events_with_their_seconds_and_reasons():
    async with FakeNeuron(["org/a", "org/b"], loaded=["org/a"]) as neuron:
        neuron.load_failures["org/b"] = (507, "out_of_memory")
        async with running_gateway(fleet_config(neuron)) as gw:
            await admin(gw.url, "/admin/models/unload", {"model": "org/a"})
            await admin(gw.url, "/admin/models/load", {"model": "org/a", "node": "n1"})
            async with (
                aiohttp.ClientSession() as session,
                session.post(gw.url + "/admin/models/load", json={"model": "org/b"}) as r,
            ):
                assert r.status == 507
            body = await state(gw.url)
    failed, *_, loaded, unloaded = body["events"]  # a failed load is retried once
    assert (unloaded["kind"], unloaded["model"], unloaded["node"], unloaded["reason"]) == (
        "unload",
        "org/a",
        "n1",
        "admin",
    )
    assert loaded["kind"] == "load"
    assert loaded["seconds"] >= 0
    assert loaded["reason"] is None
    assert (failed["kind"], failed["model"], failed["reason"]) == (
        "load_failed",
        "org/b",
        "out_of_memory",
    )


def test_the_buffers_are_bounded():
    recent = Recent(requests=3, events=2)
    for i in range(10):
        recent.request(
            RequestRecord(at=i, model=f"m{i}", node="n1", dialect="openai", status=200, seconds=0.1)
        )
        recent.loaded(f"m{i}", "n1", 1.0)
        recent.unloaded(f"m{i}", "n1", "lru")
    assert [r.model for r in recent.requests] == ["m7", "m8", "m9"]
    assert [(e.kind, e.model) for e in recent.events] == [("load", "m9"), ("unload", "m9")]


def test_a_request_record_has_no_field_for_text():
    fields = set(RequestRecord.__struct_fields__)
    assert fields == {
        "at",
        "model",
        "node",
        "dialect",
        "status",
        "seconds",
        "ttft_s",
        "completion_tokens",
        "tokens_per_second",
    }


async def test_the_state_counts_the_requests_waiting_for_a_load(neuron, client):
    neuron.load_time = 30.0  # read as the load runs: set to 0 below to end it
    async with running_gateway(fleet_config(neuron)) as gw:
        waiting = asyncio.create_task(
            client(gw.url).chat.completions.create(
                model="org/b", messages=[{"role": "user", "content": "hi"}]
            )
        )

        async def queued() -> bool:
            return bool((await state(gw.url))["queued"] == {"org/b": 1})

        await eventually(queued)
        neuron.load_time = 0.0
        await waiting
        assert (await state(gw.url))["queued"] == {}
