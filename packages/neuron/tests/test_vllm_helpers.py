"""The pure logic of the vLLM engine module, without vLLM: the module imports vLLM lazily (only
when an engine starts), so its sizing and error mapping are tested here, in the unit session."""

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cortex_core.errors import (
    ContextLengthExceededError,
    CortexError,
    EngineError,
    EngineFailedError,
    InvalidRequestError,
    LoadFailedError,
    ModelNotFoundError,
    OutOfMemoryError,
    RateLimitError,
    ServiceUnavailableError,
    UnsupportedModelError,
)
from cortex_neuron.engine import vllm
from cortex_neuron.engine.base import EnginePlan

MIB = 1024 * 1024


def plan(**overrides: Any) -> EnginePlan:
    fields: dict[str, Any] = {
        "model_id": "org/a",
        "path": Path("/models/org/a"),
        "memory_mb": 9000,
        "weights_mb": 1000,
        "device_kind": "gpu",
        "device_uuids": ("GPU-0",),
        "device_memory_mb": (80000,),
        **overrides,
    }
    return EnginePlan(**fields)


def test_on_a_gpu_memory_mb_becomes_the_fraction_of_each_device():
    args = vllm._engine_args(plan())
    assert args["gpu_memory_utilization"] == round(9000 / 80000, 4)
    assert "kv_cache_memory_bytes" not in args
    assert (args["model"], args["served_model_name"]) == ("/models/org/a", ["org/a"])
    split = vllm._engine_args(
        plan(tensor_parallel=2, device_uuids=("a", "b"), device_memory_mb=(40000, 24000))
    )
    assert split["tensor_parallel_size"] == 2
    # half the budget on each device, as a share of the smallest one
    assert split["gpu_memory_utilization"] == round(4500 / 24000, 4)


def test_on_the_cpu_build_memory_mb_less_the_weights_is_the_kv_cache():
    args = vllm._engine_args(plan(device_kind="cpu", device_memory_mb=(16000,)))
    assert args["kv_cache_memory_bytes"] == 8000 * MIB
    assert "gpu_memory_utilization" not in args


def test_the_loads_engine_args_win_and_a_download_names_the_id():
    args = vllm._engine_args(plan(path=None, engine_args={"enforce_eager": True, "seed": 3}))
    assert args["model"] == "org/a"
    assert (args["enforce_eager"], args["seed"]) == (True, 3)
    assert (args["disable_log_stats"], args["enable_log_requests"]) == (True, False)


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (ValueError("Model architectures ['Foo'] are not supported"), UnsupportedModelError),
        (ValueError("Quantization method 'x' is not supported"), UnsupportedModelError),
        (ValueError("Unknown quantization method: q9"), UnsupportedModelError),
        (RuntimeError("CUDA out of memory. Tried to allocate"), OutOfMemoryError),
        (ValueError("Available memory on node 0 is less than desired"), OutOfMemoryError),
        (RuntimeError("insufficient memory for the KV cache"), OutOfMemoryError),
        (RuntimeError("the engine core failed to start"), LoadFailedError),
        (ValueError("memory is fine, the config is not"), LoadFailedError),
    ],
)
def test_a_failed_start_becomes_the_load_code_of_the_table(raised, expected):
    error = vllm._load_error(raised)
    assert type(error) is expected
    assert error.message == f"{type(raised).__name__}: {raised}"
    assert (error.status_code, error.code) == {
        UnsupportedModelError: (422, "unsupported_model"),
        OutOfMemoryError: (507, "out_of_memory"),
        LoadFailedError: (500, "load_failed"),
    }[expected]


def engine(errored: bool = False) -> vllm.VllmEngine:
    made = vllm.VllmEngine.__new__(vllm.VllmEngine)  # no vLLM: only _error's state
    made._llm = SimpleNamespace(errored=errored)
    return made


@pytest.mark.parametrize(
    ("detail", "expected", "param"),
    [
        ({"message": "bad", "code": 400, "param": "top_p"}, InvalidRequestError, "top_p"),
        ({"message": "x", "code": 422}, InvalidRequestError, None),
        ({"message": "who", "code": 404}, ModelNotFoundError, None),
        ({"message": "full", "code": 429}, RateLimitError, None),
        ({"message": "later", "code": 503}, ServiceUnavailableError, None),
        ({"message": "odd", "code": 500}, EngineError, None),
        (
            {"message": "long", "code": 400, "param": "input_tokens"},
            ContextLengthExceededError,
            "messages",
        ),
        (
            {"message": "long", "code": 400, "param": "input_text"},
            ContextLengthExceededError,
            "messages",
        ),
    ],
)
def test_a_vllm_error_becomes_ours(detail, expected, param):
    error: CortexError = engine()._error(detail)
    assert type(error) is expected
    assert (error.message, error.param) == (detail["message"], param)


def test_a_vllm_error_from_a_dead_engine_core_is_engine_failed():
    error = engine(errored=True)._error({"code": 400})
    assert type(error) is EngineFailedError
    assert error.message == "vLLM's engine core died: vLLM failed"


def test_a_limit_is_lifted_on_chat_and_completion_requests():
    chat = SimpleNamespace(max_tokens=9, max_completion_tokens=9)
    completion = SimpleNamespace(max_tokens=9)
    vllm._lift_limit(chat)
    vllm._lift_limit(completion)
    assert (chat.max_tokens, chat.max_completion_tokens, completion.max_tokens) == (None,) * 3


class Invalid:
    def __init__(self, *errors: dict[str, Any]) -> None:
        self._errors = list(errors)

    def errors(self) -> list[dict[str, Any]]:
        return self._errors


def test_a_pydantic_refusal_names_the_first_field():
    exc = Invalid({"loc": ("messages", 0, "role"), "msg": "bad role"}, {"loc": ("x",)})
    assert vllm._pydantic_message(exc) == "messages.0.role: bad role"
    assert vllm._pydantic_param(exc) == "messages"
    bare = Invalid({})
    assert (vllm._pydantic_message(bare), vllm._pydantic_param(bare)) == ("body: invalid", None)
