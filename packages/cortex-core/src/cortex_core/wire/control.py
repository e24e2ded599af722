"""The neuron's lifecycle API (DESIGN §3): what the gateway and the neuron send each other.

Field for field the JSON of DESIGN §3. Times are Unix epoch seconds, sizes MiB. Every field
added later gets a default, so a gateway and a neuron a minor version apart still understand
each other; unknown fields are ignored on decode. Nothing here validates model ids: the
receiving handler does, with :func:`cortex_core.ids.check_model_id`, so that it can answer the
right code.
"""

from typing import Any, Literal

import msgspec

__all__ = [
    "Activation",
    "ActivationFailure",
    "ActivationState",
    "Device",
    "DeviceHealth",
    "DeviceKind",
    "Discovery",
    "EndpointResponse",
    "Health",
    "LoadResponse",
    "ModelActivity",
    "ModelInfo",
    "ModelSpec",
    "ModelStatus",
    "TokenizeRequest",
    "TokenizeResponse",
    "UnloadRequest",
    "UnloadResponse",
]

DeviceKind = Literal["gpu", "cpu"]
"""A GPU found through NVML, or the CPU memory pool of vLLM's CPU build."""

ModelStatus = Literal["available", "loading", "loaded", "unloading", "failed"]
"""available → loading → loaded → unloading → available; loading → failed → loading."""

ActivationState = Literal["pre_warming", "ready"]
"""``pre_warming`` while ``[[default_models]]`` load, then ``ready``."""


class Device(msgspec.Struct, kw_only=True, frozen=True):
    """One memory pool of a host, as ``GET /discovery`` lists it."""

    index: int
    kind: DeviceKind
    uuid: str
    name: str
    memory_total_mb: int
    compute_capability: str | None = None


class Discovery(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /discovery``: what a host is and what it has; it changes only on restart."""

    hostname: str
    os: str
    kernel: str
    version: str
    cuda_version: str | None = None
    driver_version: str | None = None
    harnesses: list[str] = msgspec.field(default_factory=list)
    devices: list[Device] = msgspec.field(default_factory=list)
    gpu_unavailable_reason: str | None = None
    spare_memory_mb: int = 0


class DeviceHealth(msgspec.Struct, kw_only=True, frozen=True):
    """A device's readings in ``GET /health``."""

    index: int
    memory_used_mb: int
    memory_free_mb: int
    utilization_pct: int | None = None
    temp_c: int | None = None


class ActivationFailure(msgspec.Struct, kw_only=True, frozen=True):
    """A default model that failed to load at start-up."""

    model_id: str
    error: str


class Activation(msgspec.Struct, kw_only=True, frozen=True):
    """Progress of loading ``[[default_models]]`` after start-up."""

    state: ActivationState = "ready"
    pending: list[str] = msgspec.field(default_factory=list)
    in_progress: str | None = None
    failed: list[ActivationFailure] = msgspec.field(default_factory=list)


class ModelActivity(msgspec.Struct, kw_only=True, frozen=True):
    """Requests running and waiting for one loaded model, in ``GET /health``."""

    id: str
    in_flight: int = 0
    queued: int = 0


class Health(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /health``: answered from caches, also while engines start or stop."""

    uptime_secs: int
    draining: bool = False
    devices: list[DeviceHealth] = msgspec.field(default_factory=list)
    activation: Activation = msgspec.field(default_factory=Activation)
    models: list[ModelActivity] = msgspec.field(default_factory=list)


class ModelInfo(msgspec.Struct, kw_only=True, frozen=True):
    """One model a neuron knows, in ``GET /models``; every field is present, unknowns null."""

    id: str
    harness: str = "vllm"
    status: ModelStatus = "available"
    devices: list[int] = msgspec.field(default_factory=list)
    memory_mb: int | None = None
    max_model_len: int | None = None
    loaded_at: float | None = None
    last_used: float | None = None
    in_flight: int = 0
    error: str | None = None


class ModelSpec(msgspec.Struct, kw_only=True, frozen=True):
    """``POST /models/load``: which model to load and how; only ``model_id`` is required.

    A null field takes the neuron's ``[harness.vllm]`` default. ``memory_mb`` is the memory
    the engine may use in total across its devices. ``chat_template`` is the template's text
    (never a path: the neuron does not open files named by the network). ``engine_args`` may
    only name keys on the neuron's allow-list.
    """

    model_id: str
    harness: str = "vllm"
    memory_mb: int | None = None
    devices: list[int] | None = None
    tensor_parallel: int | None = None
    max_model_len: int | None = None
    quant: str | None = None
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    chat_template: str | None = None
    engine_args: dict[str, Any] = msgspec.field(default_factory=dict)


class LoadResponse(msgspec.Struct, kw_only=True, frozen=True):
    """200 answer to ``POST /models/load``: the engine serves."""

    status: Literal["loaded"] = "loaded"
    model: ModelInfo


class UnloadRequest(msgspec.Struct, kw_only=True, frozen=True):
    """``POST /models/unload``.

    With neither flag, a model with requests in flight answers 409 ``model_busy``; ``drain``
    stops admitting and waits for them (up to ``drain_timeout_s``); ``force`` aborts them.
    """

    model_id: str
    drain: bool = False
    force: bool = False


class UnloadResponse(msgspec.Struct, kw_only=True, frozen=True):
    """200 answer to ``POST /models/unload``, sent once the engine's processes are gone."""

    status: Literal["unloaded"] = "unloaded"


class EndpointResponse(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /models/{model_id}/endpoint``: where the model's inference is served."""

    url: str


class TokenizeRequest(msgspec.Struct, kw_only=True, frozen=True):
    """``POST /tokenize``: count ``messages`` (chat template and ``tools``) or ``prompt``."""

    model: str
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    tools: list[dict[str, Any]] | None = None


class TokenizeResponse(msgspec.Struct, kw_only=True, frozen=True):
    """Answer to ``POST /tokenize``."""

    count: int
    max_model_len: int
