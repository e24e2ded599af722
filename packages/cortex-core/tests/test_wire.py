"""The wire types against the JSON examples of DESIGN §3, field for field."""

import json

import pytest

from cortex_core import codec
from cortex_core.wire.control import (
    Device,
    Discovery,
    EndpointResponse,
    Health,
    LoadResponse,
    ModelInfo,
    ModelSpec,
    TokenizeRequest,
    TokenizeResponse,
    UnloadRequest,
    UnloadResponse,
)
from cortex_core.wire.inference import InferenceRequest, UsageReport
from cortex_core.wire.models import ModelCard, ModelList, ModelLocation

DISCOVERY = """
{"hostname": "beast", "os": "Linux", "kernel": "6.8.0", "version": "0.1.0",
 "cuda_version": "13.0", "driver_version": "580.159.04", "harnesses": ["vllm"],
 "devices": [{"index": 0, "kind": "gpu", "uuid": "GPU-e13f…", "name": "NVIDIA H100 80GB HBM3",
              "memory_total_mb": 81559, "compute_capability": "9.0"}],
 "gpu_unavailable_reason": null, "spare_memory_mb": 2048}
"""

CPU_DISCOVERY = """
{"hostname": "laptop", "os": "Linux", "kernel": "6.8.0", "version": "0.1.0",
 "cuda_version": null, "driver_version": null, "harnesses": ["vllm"],
 "devices": [{"index": 0, "kind": "cpu", "uuid": "cpu", "name": "CPU (vLLM CPU build)",
              "memory_total_mb": 12288, "compute_capability": null}],
 "gpu_unavailable_reason": "NVML: libnvidia-ml.so.1 not found", "spare_memory_mb": 0}
"""

HEALTH = """
{"uptime_secs": 3605, "draining": false,
 "devices": [{"index": 0, "memory_used_mb": 18000, "memory_free_mb": 63559,
              "utilization_pct": 37, "temp_c": 51}],
 "activation": {"state": "ready", "pending": [], "in_progress": null,
                "failed": [{"model_id": "org/x", "error": "…"}]},
 "models": [{"id": "Qwen/Qwen3-0.6B", "in_flight": 2, "queued": 0}]}
"""

MODELS = """
[{"id": "Qwen/Qwen3-0.6B", "harness": "vllm", "status": "loaded", "devices": [0],
  "memory_mb": 9000, "max_model_len": 8192, "loaded_at": 1795790000.5,
  "last_used": 1795793000.1, "in_flight": 2, "error": null},
 {"id": "org/other", "harness": "vllm", "status": "available", "devices": [],
  "memory_mb": null, "max_model_len": null, "loaded_at": null, "last_used": null,
  "in_flight": 0, "error": null}]
"""

LOAD = """
{"model_id": "Qwen/Qwen3-0.6B", "harness": "vllm", "memory_mb": 9000, "devices": [0],
 "tensor_parallel": 1, "max_model_len": 8192, "quant": null,
 "tool_call_parser": "hermes", "reasoning_parser": "qwen3", "chat_template": null,
 "engine_args": {}}
"""


@pytest.mark.parametrize(
    ("raw", "type_"),
    [
        (DISCOVERY, Discovery),
        (CPU_DISCOVERY, Discovery),
        (HEALTH, Health),
        (MODELS, list[ModelInfo]),
        (LOAD, ModelSpec),
        ('{"model_id": "a/b", "drain": true, "force": false}', UnloadRequest),
        ('{"status": "unloaded"}', UnloadResponse),
        ('{"url": "http://beast:13131"}', EndpointResponse),
        ('{"count": 123, "max_model_len": 8192}', TokenizeResponse),
    ],
)
def test_design_examples_decode_and_encode_back_to_the_same_json(raw, type_):
    decoded = codec.decode(raw, type_)
    assert json.loads(codec.encode(decoded)) == json.loads(raw)


def test_discovery_reads_as_a_program_needs_it():
    discovery = codec.decode(DISCOVERY, Discovery)
    assert discovery.devices == [
        Device(
            index=0,
            kind="gpu",
            uuid="GPU-e13f…",
            name="NVIDIA H100 80GB HBM3",
            memory_total_mb=81559,
            compute_capability="9.0",
        )
    ]


def test_health_reads_as_a_program_needs_it():
    health = codec.decode(HEALTH, Health)
    assert health.activation.failed[0].model_id == "org/x"
    assert health.models[0].in_flight == 2
    assert health.devices[0].memory_free_mb == 63559


def test_only_model_id_is_required_in_a_load():
    spec = codec.decode(b'{"model_id": "x"}', ModelSpec)
    assert spec == ModelSpec(model_id="x")
    assert spec.harness == "vllm"
    assert spec.memory_mb is None
    assert spec.engine_args == {}


def test_every_model_info_field_is_present_when_encoded():
    encoded = json.loads(codec.encode(ModelInfo(id="x")))
    assert encoded == {
        "id": "x",
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


def test_unknown_fields_from_a_newer_peer_are_ignored():
    info = codec.decode(b'{"id": "x", "status": "loaded", "new_field": 1}', ModelInfo)
    assert info.status == "loaded"


def test_an_unknown_status_is_refused():
    with pytest.raises(Exception, match="status"):
        codec.decode(b'{"id": "x", "status": "sleeping"}', ModelInfo)


def test_load_response():
    raw = codec.encode(LoadResponse(model=ModelInfo(id="x", status="loaded")))
    assert json.loads(raw)["status"] == "loaded"
    assert codec.decode(raw, LoadResponse).model.status == "loaded"


def test_tokenize_request_takes_messages_or_a_prompt():
    by_messages = codec.decode(
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}', TokenizeRequest
    )
    assert by_messages.prompt is None
    assert by_messages.messages == [{"role": "user", "content": "hi"}]
    assert codec.decode(b'{"model": "m", "prompt": "hi"}', TokenizeRequest).prompt == "hi"


def test_inference_request_reads_only_the_routing_fields():
    body = b'{"model": "m", "messages": [], "temperature": 0.3, "stream": true}'
    request = codec.decode(body, InferenceRequest)
    assert request.model == "m"
    assert request.streaming
    assert not request.wants_usage


@pytest.mark.parametrize(
    ("body", "streaming", "usage"),
    [
        (b'{"model": "m"}', False, False),
        (b'{"model": "m", "stream": null}', False, False),
        (b'{"model": "m", "stream": false}', False, False),
        (b'{"model": "m", "stream": true, "stream_options": null}', True, False),
        (b'{"model": "m", "stream": true, "stream_options": {}}', True, False),
        (b'{"model": "m", "stream": true, "stream_options": {"include_usage": true}}', True, True),
    ],
)
def test_inference_request_flags(body, streaming, usage):
    request = codec.decode(body, InferenceRequest)
    assert request.streaming is streaming
    assert request.wants_usage is usage


def test_usage_report_reads_usage_from_a_chunk_or_a_body():
    chunk = b'{"id": "c", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7,'
    chunk += b' "total_tokens": 12}}'
    report = codec.decode(chunk, UsageReport)
    assert report.usage is not None
    assert report.usage.completion_tokens == 7
    assert codec.decode(b'{"choices": []}', UsageReport).usage is None


def test_model_list_for_the_neuron_has_no_locations():
    listing = ModelList(data=[ModelCard(id="m", created=1, owned_by="neuron", max_model_len=512)])
    assert json.loads(codec.encode(listing)) == {
        "object": "list",
        "data": [
            {
                "id": "m",
                "object": "model",
                "created": 1,
                "owned_by": "neuron",
                "max_model_len": 512,
            }
        ],
    }


def test_model_list_for_the_gateway_has_locations():
    card = ModelCard(id="m", locations=[ModelLocation(node="beast", status="loaded")])
    assert json.loads(codec.encode(card))["locations"] == [{"node": "beast", "status": "loaded"}]
