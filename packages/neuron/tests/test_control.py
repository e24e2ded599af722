"""The lifecycle API on the fake engine: every route, code and state transition of DESIGN §3."""

import asyncio
import json

import pytest

from cortex_core.errors import LoadFailedError, OutOfMemoryError, UnsupportedModelError
from cortex_neuron.engine.fake import FakeStarter
from cortex_neuron.testing import eventually, fake_model


async def test_discovery_on_a_host_without_gpus(neuron):
    body = (await neuron.http.get("/discovery")).json()
    assert body["harnesses"] == ["vllm"]
    assert body["cuda_version"] is None
    assert body["driver_version"] is None
    assert body["gpu_unavailable_reason"] == "NVML: libnvidia-ml.so.1 not found"
    assert body["devices"] == [
        {
            "index": 0,
            "kind": "cpu",
            "uuid": "cpu",
            "name": "CPU (vLLM CPU build)",
            "memory_total_mb": 1000,
            "compute_capability": None,
        }
    ]
    assert body["version"] == "0.1.0"


async def test_health_when_idle(neuron):
    body = (await neuron.http.get("/health")).json()
    assert body["draining"] is False
    assert body["uptime_secs"] >= 0
    assert body["devices"] == [
        {
            "index": 0,
            "memory_used_mb": 0,
            "memory_free_mb": 1000,
            "utilization_pct": None,
            "temp_c": None,
        }
    ]
    assert body["activation"] == {
        "state": "ready",
        "pending": [],
        "in_progress": None,
        "failed": [],
    }
    assert body["models"] == []


async def test_models_lists_what_is_on_disk(neuron):
    models = await neuron.models()
    assert sorted(models) == ["beta", "org/alpha"]
    assert models["org/alpha"] == {
        "id": "org/alpha",
        "harness": "vllm",
        "status": "available",
        "devices": [],
        "memory_mb": None,
        "max_model_len": None,
        "loaded_at": None,
        "last_used": None,
        "in_flight": 0,
        "error": None,
    }


async def test_load_then_serve(neuron):
    response = await neuron.load(memory_mb=300, max_model_len=1024)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "loaded"
    model = body["model"]
    assert model["status"] == "loaded"
    assert model["devices"] == [0]
    assert model["memory_mb"] == 300
    assert model["max_model_len"] == 1024
    assert model["loaded_at"] == model["last_used"]
    assert (await neuron.models())["org/alpha"]["status"] == "loaded"
    health = (await neuron.http.get("/health")).json()
    assert health["devices"][0]["memory_used_mb"] == 300
    assert health["devices"][0]["memory_free_mb"] == 700
    assert health["models"] == [{"id": "org/alpha", "in_flight": 0, "queued": 0}]
    listing = (await neuron.http.get("/v1/models")).json()
    assert [m["id"] for m in listing["data"]] == ["org/alpha"]
    assert listing["data"][0]["max_model_len"] == 1024


async def test_the_plan_carries_the_spec_and_the_defaults(make_neuron, options, starter):
    async with make_neuron() as neuron:
        await neuron.load(
            "beta",
            memory_mb=200,
            tool_call_parser="hermes",
            reasoning_parser="",
            chat_template="{{ messages }}",
            engine_args={"seed": 7},
        )
    (plan,) = starter.plans
    assert plan.model_id == "beta"
    assert plan.path == options_path(options, "beta")
    assert plan.weights_mb == 2
    assert plan.device_kind == "cpu"
    assert plan.device_uuids == ("cpu",)
    assert plan.device_memory_mb == (1000,)
    assert plan.tool_call_parser == "hermes"
    assert plan.reasoning_parser is None
    assert plan.chat_template == "{{ messages }}"
    assert plan.engine_args == {"seed": 7}


def options_path(options, model_id):
    from pathlib import Path

    return Path(options.model_dirs[0]) / model_id


async def test_a_load_without_memory_takes_90_percent_of_the_pool(neuron):
    assert (await neuron.load()).json()["model"]["memory_mb"] == 900


async def test_loading_a_loaded_model_is_200_without_a_second_load(neuron):
    await neuron.load(memory_mb=100)
    again = await neuron.load(memory_mb=100)
    assert again.status_code == 200
    assert len(neuron.starter.plans) == 1


async def test_concurrent_loads_share_one_load(make_neuron):
    slow = FakeStarter(load_delay=0.3)
    async with make_neuron(starter_=slow) as neuron:
        answers = await asyncio.gather(*(neuron.load(memory_mb=100) for _ in range(5)))
        assert [a.status_code for a in answers] == [200] * 5
        assert len(slow.plans) == 1


def status_is(neuron, status: str):
    async def check() -> bool:
        return bool((await neuron.models())["org/alpha"]["status"] == status)

    return check


async def test_health_and_models_answer_during_a_load(make_neuron):
    slow = FakeStarter(load_delay=1.0)
    async with make_neuron(starter_=slow) as neuron:
        loading = asyncio.create_task(neuron.load(memory_mb=100))
        await eventually(status_is(neuron, "loading"))
        assert (await neuron.http.get("/health")).status_code == 200
        assert not loading.done()
        assert (await loading).status_code == 200


async def test_a_load_goes_on_when_its_client_goes_away(make_neuron):
    slow = FakeStarter(load_delay=0.5)
    async with make_neuron(starter_=slow) as neuron:
        gone = asyncio.create_task(neuron.load(memory_mb=100))
        await eventually(status_is(neuron, "loading"))
        gone.cancel()

        async def settled() -> bool:
            return bool((await neuron.models())["org/alpha"]["status"] != "loading")

        await eventually(settled)
        assert (await neuron.models())["org/alpha"]["status"] == "loaded"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model_id": "../x"}, 400, "invalid_model_id"),
        ({"model_id": "/etc"}, 400, "invalid_model_id"),
        ({"model_id": "a/b/c"}, 400, "invalid_model_id"),
        ({"model_id": ""}, 400, "invalid_model_id"),
        ({"model_id": "org/missing"}, 404, "model_not_found"),
        ({"model_id": "beta", "harness": "tgi"}, 400, "invalid_spec"),
        ({"model_id": "beta", "engine_args": {"model": "/etc"}}, 400, "invalid_spec"),
        ({"model_id": "beta", "engine_args": {"trust_remote_code": True}}, 400, "invalid_spec"),
        ({"model_id": "beta", "memory_mb": -5}, 400, "invalid_spec"),
        ({"model_id": "beta", "memory_mb": 10}, 400, "invalid_spec"),
        ({"model_id": "beta", "memory_mb": 100, "max_model_len": -1}, 400, "invalid_spec"),
        ({"model_id": "beta", "memory_mb": 100, "tensor_parallel": 0}, 400, "invalid_spec"),
        ({"model_id": "beta", "memory_mb": 100, "devices": [3]}, 400, "invalid_spec"),
        ({"model_id": "beta", "memory_mb": 0}, 400, "invalid_spec"),
        ({"model_id": "beta", "memory_mb": 5000}, 507, "out_of_memory"),
        ({"model_id": 7}, 400, "invalid_request"),
        ({"memory_mb": 7}, 400, "invalid_request"),
        ({"model_id": "beta", "memory_mb": "lots"}, 400, "invalid_request"),
        ([], 400, "invalid_request"),
    ],
)
async def test_bad_loads(neuron, body, status, code):
    response = await neuron.http.post("/models/load", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert "Traceback" not in error["message"]
    assert (await neuron.http.get("/health")).status_code == 200
    assert neuron.starter.plans == []


async def test_malformed_json(neuron):
    response = await neuron.http.post("/models/load", content=b'{"model_id": ')
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


async def test_bad_field_names_the_param(neuron):
    response = await neuron.http.post("/models/load", json={"model_id": "beta", "devices": "0"})
    assert response.json()["error"]["param"] == "devices"


async def test_trust_remote_code_when_the_config_allows_it(make_neuron, options):
    import msgspec

    from cortex_core.config import HarnessOptions

    allowed = msgspec.structs.replace(options, allow_trust_remote_code=True)
    async with make_neuron(harness=HarnessOptions(vllm=allowed)) as neuron:
        response = await neuron.load(engine_args={"trust_remote_code": True}, memory_mb=100)
        assert response.status_code == 200


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (UnsupportedModelError("architecture Foo is not supported"), 422, "unsupported_model"),
        (OutOfMemoryError("no room on the device"), 507, "out_of_memory"),
        (LoadFailedError("vLLM said no"), 500, "load_failed"),
    ],
)
async def test_load_failures_mark_the_model_failed_and_the_next_load_retries(
    make_neuron, error, status, code
):
    failing = FakeStarter(fail=error)
    async with make_neuron(starter_=failing) as neuron:
        response = await neuron.load(memory_mb=100)
        assert response.status_code == status
        assert response.json()["error"] == {
            "message": error.message,
            "type": error.error_type,
            "param": None,
            "code": code,
        }
        model = (await neuron.models())["org/alpha"]
        assert model["status"] == "failed"
        assert model["error"] == error.message
        health = (await neuron.http.get("/health")).json()
        assert health["devices"][0]["memory_used_mb"] == 0
        failing.fail = None
        assert (await neuron.load(memory_mb=100)).status_code == 200
        assert (await neuron.models())["org/alpha"]["error"] is None


async def test_an_unexpected_load_error_is_load_failed_with_the_reason(make_neuron):
    class Exploding(FakeStarter):
        async def __call__(self, plan):
            raise RuntimeError("CUDA out of cheese")

    async with make_neuron(starter_=Exploding()) as neuron:
        response = await neuron.load(memory_mb=100)
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "load_failed"
        assert "CUDA out of cheese" in response.json()["error"]["message"]


async def test_two_models_share_the_pool_and_a_third_does_not_fit(neuron):
    assert (await neuron.load("org/alpha", memory_mb=400)).status_code == 200
    assert (await neuron.load("beta", memory_mb=400)).status_code == 200
    models = await neuron.models()
    assert models["org/alpha"]["status"] == models["beta"]["status"] == "loaded"
    fake_model(neuron.ctx.config.harness.vllm.model_dirs[0] and _dir(neuron), "gamma")
    await neuron.ctx.lifecycle.rescan()
    third = await neuron.load("gamma", memory_mb=400)
    assert third.status_code == 507
    assert "200 MiB" in third.json()["error"]["message"]


def _dir(neuron):
    from pathlib import Path

    return Path(neuron.ctx.config.harness.vllm.model_dirs[0])


async def test_unload(neuron):
    await neuron.load(memory_mb=300)
    engine = neuron.starter.engines["org/alpha"]
    response = await neuron.http.post("/models/unload", json={"model_id": "org/alpha"})
    assert response.status_code == 200
    assert response.json() == {"status": "unloaded"}
    assert engine.shut_down
    model = (await neuron.models())["org/alpha"]
    assert model["status"] == "available"
    assert model["memory_mb"] is None
    health = (await neuron.http.get("/health")).json()
    assert health["devices"][0]["memory_used_mb"] == 0
    assert health["models"] == []
    assert (await neuron.http.get("/v1/models")).json()["data"] == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model_id": "org/alpha"}, 404, "model_not_loaded"),
        ({"model_id": "nobody"}, 404, "model_not_loaded"),
        ({"model_id": "../etc"}, 400, "invalid_model_id"),
        ({"model_id": "beta", "drain": "maybe"}, 400, "invalid_request"),
    ],
)
async def test_bad_unloads(neuron, body, status, code):
    response = await neuron.http.post("/models/unload", json=body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_unload_of_a_busy_model_is_409(make_neuron):
    async with make_neuron(starter_=FakeStarter(token_delay=0.05)) as neuron:
        await neuron.load(memory_mb=100)
        async with _stream(neuron, max_tokens=40) as lines:
            await anext(lines)
            response = await neuron.http.post("/models/unload", json={"model_id": "org/alpha"})
            assert response.status_code == 409
            assert response.json()["error"]["code"] == "model_busy"
            assert (await neuron.models())["org/alpha"]["status"] == "loaded"


async def test_unload_with_drain_waits_for_the_stream(make_neuron):
    async with make_neuron(starter_=FakeStarter(token_delay=0.02)) as neuron:
        await neuron.load(memory_mb=100)
        async with _stream(neuron, max_tokens=30) as lines:
            await anext(lines)
            unload = asyncio.create_task(
                neuron.http.post("/models/unload", json={"model_id": "org/alpha", "drain": True})
            )
            await eventually(status_is(neuron, "unloading"))
            refused = await _chat(neuron)
            assert refused.status_code == 404
            assert refused.json()["error"]["code"] == "model_not_loaded"
            rest = [line async for line in lines]
            assert not unload.done()
        assert rest[-1] == "data: [DONE]"
        assert not any('"error"' in line for line in rest)
        assert (await unload).status_code == 200
        assert (await neuron.models())["org/alpha"]["status"] == "available"


async def test_unload_with_force_ends_the_stream_with_an_error(make_neuron):
    async with make_neuron(starter_=FakeStarter(token_delay=0.05)) as neuron:
        await neuron.load(memory_mb=100)
        async with _stream(neuron, max_tokens=200) as lines:
            await anext(lines)
            response = await neuron.http.post(
                "/models/unload", json={"model_id": "org/alpha", "force": True}
            )
            assert response.status_code == 200
            rest = [line async for line in lines]
        error = json.loads(rest[-2].removeprefix("data: "))["error"]
        assert error["code"] == "service_unavailable"
        assert "unloaded" in error["message"]
        assert rest[-1] == "data: [DONE]"


async def test_unload_during_a_load_waits_for_the_load(make_neuron):
    async with make_neuron(starter_=FakeStarter(load_delay=0.3)) as neuron:
        loading = asyncio.create_task(neuron.load(memory_mb=100))
        await eventually(status_is(neuron, "loading"))
        response = await neuron.http.post("/models/unload", json={"model_id": "org/alpha"})
        assert response.status_code == 200
        assert (await loading).status_code == 200
        assert (await neuron.models())["org/alpha"]["status"] == "available"


async def test_a_load_while_unloading_waits_then_loads(make_neuron):
    class SlowStop(FakeStarter):
        async def __call__(self, plan):
            engine = await super().__call__(plan)
            stop = engine.shutdown

            async def slow_shutdown():
                await asyncio.sleep(0.3)
                await stop()

            engine.shutdown = slow_shutdown  # type: ignore[method-assign]
            return engine

    async with make_neuron(starter_=SlowStop()) as neuron:
        await neuron.load(memory_mb=100)
        unloading = asyncio.create_task(
            neuron.http.post("/models/unload", json={"model_id": "org/alpha"})
        )
        await eventually(status_is(neuron, "unloading"))
        again = await neuron.load(memory_mb=100)
        assert again.status_code == 200
        assert (await unloading).status_code == 200
        assert len(neuron.starter.plans) == 2
        assert (await neuron.models())["org/alpha"]["status"] == "loaded"


async def test_two_unloads_at_once_both_succeed(make_neuron):
    async with make_neuron() as neuron:
        await neuron.load(memory_mb=100)
        first, second = await asyncio.gather(
            neuron.http.post("/models/unload", json={"model_id": "org/alpha"}),
            neuron.http.post("/models/unload", json={"model_id": "org/alpha"}),
        )
        assert sorted([first.status_code, second.status_code]) in ([200, 200], [200, 404])


async def test_endpoint(neuron):
    unknown = await neuron.http.get("/models/org/missing/endpoint")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    not_loaded = await neuron.http.get("/models/org/alpha/endpoint")
    assert not_loaded.json()["error"]["code"] == "model_not_loaded"
    await neuron.load(memory_mb=100)
    response = await neuron.http.get("/models/org/alpha/endpoint")
    assert response.status_code == 200
    assert response.json() == {"url": neuron.url}
    bad = await neuron.http.get("/models/a/b/c/endpoint")
    assert bad.json()["error"]["code"] == "invalid_model_id"


async def test_unknown_routes_and_methods_use_the_envelope(neuron):
    missing = await neuron.http.get("/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = await neuron.http.get("/models/load")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


async def test_engine_crash_marks_the_model_failed(make_neuron):
    async with make_neuron(starter_=FakeStarter(token_delay=0.05)) as neuron:
        await neuron.load(memory_mb=300)
        engine = neuron.starter.engines["org/alpha"]
        async with _stream(neuron, max_tokens=200) as lines:
            await anext(lines)
            engine.kill("segfault in the worker")
            neuron.ctx.lifecycle.check_engines()
            rest = [line async for line in lines]
        error = json.loads(rest[-2].removeprefix("data: "))["error"]
        assert error["code"] == "engine_failed"
        assert "segfault in the worker" in error["message"]
        model = (await neuron.models())["org/alpha"]
        assert model["status"] == "failed"
        assert model["error"] == "segfault in the worker"
        assert (await neuron.http.get("/health")).json()["devices"][0]["memory_used_mb"] == 0
        refused = await _chat(neuron)
        assert refused.json()["error"]["code"] == "model_not_loaded"
        await asyncio.sleep(0.05)
        assert engine.shut_down
        metrics = (await neuron.http.get("/metrics")).text
        assert 'neuron_engine_failures_total{model="org/alpha"} 1.0' in metrics
        assert (await neuron.load(memory_mb=300)).status_code == 200


async def test_the_background_check_finds_a_dead_engine(neuron):
    await neuron.load(memory_mb=100)
    neuron.starter.engines["org/alpha"].kill()
    for _ in range(30):
        if (await neuron.models())["org/alpha"]["status"] == "failed":
            break
        await asyncio.sleep(0.1)
    assert (await neuron.models())["org/alpha"]["error"] == "the engine's process died"


async def test_default_models_load_in_the_background(make_neuron):
    from cortex_core.config import DefaultModel

    slow = FakeStarter(load_delay=0.3)
    defaults = (
        DefaultModel(model_id="org/alpha", memory_mb=100),
        DefaultModel(model_id="org/missing"),
        DefaultModel(model_id="beta", memory_mb=100),
    )
    async with make_neuron(starter_=slow, default_models=defaults) as neuron:
        first = (await neuron.http.get("/health")).json()["activation"]
        assert first["state"] == "pre_warming"
        assert first["in_progress"] == "org/alpha"
        assert first["pending"] == ["org/missing", "beta"]
        for _ in range(50):
            activation = (await neuron.http.get("/health")).json()["activation"]
            if activation["state"] == "ready":
                break
            await asyncio.sleep(0.05)
        assert activation["failed"] == [
            {
                "model_id": "org/missing",
                "error": "The model `org/missing` is not in this host's model dirs or cache",
            }
        ]
        models = await neuron.models()
        assert models["org/alpha"]["status"] == models["beta"]["status"] == "loaded"


async def test_auth_token(make_neuron):
    async with make_neuron(auth_token="s3cret") as neuron:
        assert (await neuron.http.get("/health")).status_code == 200
        for path in ("/models", "/discovery", "/v1/models", "/metrics"):
            response = await neuron.http.get(path)
            assert response.status_code == 401, path
            assert response.json()["error"]["type"] == "authentication_error"
        wrong = await neuron.http.get("/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await neuron.http.get("/models", headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200


async def test_draining_refuses_new_work(neuron):
    await neuron.load(memory_mb=100)
    await neuron.ctx.lifecycle.drain(1)
    assert (await neuron.http.get("/health")).json()["draining"] is True
    for response in (await _chat(neuron), await neuron.load("beta", memory_mb=100)):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "shutting_down"
        assert response.headers["retry-after"] == "5"


async def test_metrics(neuron):
    await neuron.load(memory_mb=100)
    await neuron.load("beta", memory_mb=5000)
    assert (await _chat(neuron)).status_code == 200
    text = (await neuron.http.get("/metrics")).text
    assert 'neuron_model_loads_total{model="org/alpha",result="ok"} 1.0' in text
    assert 'neuron_model_loads_total{model="beta",result="out_of_memory"}' not in text
    assert 'neuron_model_load_seconds_count{model="org/alpha"} 1.0' in text
    assert 'neuron_requests_total{model="org/alpha",route="chat",status="200"} 1.0' in text
    assert 'neuron_requests_in_flight{model="org/alpha"} 0.0' in text
    assert 'neuron_model_loaded{model="org/alpha"} 1.0' in text
    await neuron.http.post("/models/unload", json={"model_id": "org/alpha"})
    text = (await neuron.http.get("/metrics")).text
    assert 'neuron_model_unloads_total{model="org/alpha"} 1.0' in text
    assert 'neuron_model_loaded{model="org/alpha"} 0.0' in text


def _chat(neuron, **extra):
    body = {"model": "org/alpha", "messages": [{"role": "user", "content": "hi"}], **extra}
    return neuron.http.post("/v1/chat/completions", json=body)


class _stream:
    """The data lines of a streamed chat, as an async iterator, inside ``async with``."""

    def __init__(self, neuron, **extra):
        self._request = neuron.http.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "org/alpha",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
                **extra,
            },
        )

    async def __aenter__(self):
        response = await self._request.__aenter__()
        assert response.status_code == 200
        return (line async for line in response.aiter_lines() if line.startswith("data:"))

    async def __aexit__(self, *exc):
        await self._request.__aexit__(*exc)


async def test_an_unexpected_error_is_a_500_envelope_with_the_request_id(neuron, monkeypatch):
    def broken():
        raise RuntimeError("bug")

    monkeypatch.setattr(neuron.ctx.lifecycle, "models", broken)
    response = await neuron.http.get("/models", headers={"x-request-id": "req-7"})
    assert response.status_code == 500
    assert response.json()["error"] == {
        "message": "Internal error; the neuron's log has it under request id req-7",
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }
    assert response.headers["x-request-id"] == "req-7"
    assert "bug" not in response.text
