"""The vLLM engine: one ``AsyncLLM`` per model, served through vLLM's own OpenAI layer.

The only module that imports vLLM, and the one that sets its environment first (usage stats
off, the Hub offline unless downloads are allowed, vLLM's logging left to the neuron, device
visibility while an engine is built). Pinned to vLLM 0.32.0: the serving-layer constructors used
here change between releases, and the engine-marked tests fail when an upgrade breaks them.

- Building an engine blocks for seconds to minutes (the engine core's handshake), so it runs in
  a worker thread, one at a time (device visibility is process-global). ``AsyncLLM`` binds its
  output handler to the event loop of its first request, which is the neuron's.
- The engine's processes are started in a process group of their own (:mod:`.processes`), so
  that a Ctrl-C (a SIGINT to the terminal's whole group) reaches the neuron only, which then
  drains and shuts the engines down itself.
- :func:`warm` imports vLLM ahead of the first load and arms a warm spare (:mod:`.spare`): the
  engine core and its worker, already imported, for the next load; armed again after each.
- ``memory_mb`` becomes ``gpu_memory_utilization`` per device on a GPU, and the KV cache size
  (``memory_mb`` less the weights) on the CPU build, so that several models share a device.
- ``max_tokens`` larger than the context left after the prompt is lowered to fit; a request with
  tools for a model without a tool parser is answered as text.
- ``/v1/responses`` is vLLM's ``OpenAIServingResponses``, in :mod:`.vllm_responses`.
- Cancelling a call, or closing its stream, aborts the request inside vLLM.
"""

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
import types
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psutil

from cortex_core.errors import (
    ContextLengthExceededError,
    CortexError,
    EngineError,
    EngineFailedError,
    InvalidRequestError,
    InvalidSpecError,
    LoadFailedError,
    ModelNotFoundError,
    OutOfMemoryError,
    RateLimitError,
    ServiceUnavailableError,
    UnsupportedModelError,
)
from cortex_core.wire.control import DeviceKind, TokenizeRequest
from cortex_neuron.engine.base import Answer, EnginePlan, EngineStats
from cortex_neuron.engine.processes import alive, cmdline, own_process_group, reap
from cortex_neuron.engine.spare import CORE_MODULES, WORKER_MODULES, Spares
from cortex_neuron.engine.vllm_responses import ResponsesServing

__all__ = ["VllmEngine", "close", "start", "warm"]

logger = logging.getLogger(__name__)

_MIB = 1024 * 1024
_PROMPT_TOO_LONG = frozenset({"input_tokens", "input_text"})
_SHUTDOWN_TIMEOUT_S = 20.0
_REARM_S = 5.0  # after a load, before the next spare starts importing
_build_lock = asyncio.Lock()
_spares: Spares | None = None


@functools.cache
def _vllm(allow_download: bool) -> types.SimpleNamespace:
    """Set vLLM's environment, then import what the neuron uses of it (once per process)."""
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    if not allow_download:
        os.environ["HF_HUB_OFFLINE"] = "1"
    from pydantic import ValidationError
    from vllm.config import VllmConfig
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.entrypoints.openai.completion.serving import OpenAIServingCompletion
    from vllm.entrypoints.openai.models.protocol import BaseModelPath
    from vllm.entrypoints.openai.models.serving import OpenAIServingModels
    from vllm.entrypoints.serve.engine.protocol import ErrorResponse
    from vllm.entrypoints.serve.tokenize.protocol import (
        TokenizeChatRequest,
        TokenizeCompletionRequest,
    )
    from vllm.entrypoints.serve.tokenize.serving import ServingTokenization
    from vllm.exceptions import VLLMValidationError
    from vllm.renderers.online_renderer import OnlineRenderer
    from vllm.utils.ompmultiprocessing import OMPProcessManager
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.engine.exceptions import EngineDeadError

    return types.SimpleNamespace(
        AsyncEngineArgs=AsyncEngineArgs,
        AsyncLLM=AsyncLLM,
        BaseModelPath=BaseModelPath,
        ChatCompletionRequest=ChatCompletionRequest,
        CompletionRequest=CompletionRequest,
        EngineDeadError=EngineDeadError,
        ErrorResponse=ErrorResponse,
        OMPProcessManager=OMPProcessManager,
        OnlineRenderer=OnlineRenderer,
        OpenAIServingChat=OpenAIServingChat,
        OpenAIServingCompletion=OpenAIServingCompletion,
        OpenAIServingModels=OpenAIServingModels,
        ServingTokenization=ServingTokenization,
        TokenizeChatRequest=TokenizeChatRequest,
        TokenizeCompletionRequest=TokenizeCompletionRequest,
        ValidationError=ValidationError,
        VLLMValidationError=VLLMValidationError,
        VllmConfig=VllmConfig,
    )


def warm(allow_download: bool, kind: DeviceKind, spare_mb: int) -> None:
    """Import vLLM, then arm a spare for the first load, when ``spare_mb`` allows one.

    Blocks for seconds: call it from a worker thread, before any load.
    """
    global _spares
    v = _vllm(allow_download)
    if spare_mb and _spares is None:
        # vLLM's platform sets the engine processes' environment (LD_PRELOAD of tcmalloc and
        # torch's libgomp on the CPU build) while it builds a config; a spare started before
        # could not take it on
        config = v.VllmConfig()
        roles = [(CORE_MODULES, {}), (WORKER_MODULES[kind], _worker_env(v, config))]
        _spares = Spares(roles, spare_mb)
        _spares.arm()


def _worker_env(v: types.SimpleNamespace, config: Any) -> dict[str, str]:
    """What vLLM's executor adds to the environment around its first worker's spawn.

    On the CPU build, its OpenMP thread count and binding (one core is left to the engine core),
    which the worker's OpenMP runtime reads as it loads. A load whose worker gets other values
    (another tensor-parallel size, say) finds the spare started under others and goes cold. On
    a GPU it is empty, and the engine core sets its workers' ``OMP_NUM_THREADS`` itself: there
    the worker's spare is passed over and the engine core's still serves.
    """
    before = dict(os.environ)
    with v.OMPProcessManager(config).configure_omp_envs(rank=0, local_rank=0):
        return {k: value for k, value in os.environ.items() if before.get(k) != value}


def close() -> None:
    """Stop the spare (the engines are the lifecycle's to stop)."""
    if _spares is not None:
        _spares.stop()


async def start(plan: EnginePlan) -> "VllmEngine":
    """Build and start an engine for ``plan``; it serves when this returns.

    The spare :func:`warm` armed serves its processes, and another is armed after the build.

    Raises:
        CortexError: the load's failure, classified as DESIGN §3's table says.
    """
    started = time.monotonic()
    v = await asyncio.to_thread(_vllm, plan.allow_download)
    phases = {"import": time.monotonic() - started}
    async with _build_lock:
        try:
            llm, pids = await asyncio.to_thread(_build, v, plan, phases)
        finally:
            if _spares is not None:
                _spares.arm(_REARM_S)
    built = time.monotonic()
    engine = VllmEngine(v, llm, pids, plan)
    phases["serving"] = time.monotonic() - built
    engine.load_phases = phases
    return engine


def _build(v: Any, plan: EnginePlan, phases: dict[str, float]) -> tuple[Any, list[int]]:
    try:
        args = v.AsyncEngineArgs(**_engine_args(plan))
    except (TypeError, ValueError, v.ValidationError) as exc:
        raise InvalidSpecError(f"vLLM refused the engine arguments: {exc}") from exc
    spares = _spares
    waiting = spares.pids() if spares is not None else set()
    before = {p.pid for p in psutil.Process().children(recursive=True)} - waiting
    started = time.monotonic()
    try:
        take = spares.take if spares is not None else None
        with _device_visibility(plan), own_process_group(take=take):
            llm = v.AsyncLLM.from_engine_args(args)
    except Exception as exc:  # every failure becomes one of DESIGN §3's codes
        raise _load_error(exc) from exc
    phases["engine"] = time.monotonic() - started
    unused = spares.pids() if spares is not None else set()  # a spare passed over
    pids = [
        p.pid
        for p in psutil.Process().children(recursive=True)
        if p.pid not in before | unused and "resource_tracker" not in " ".join(cmdline(p))
    ]
    return llm, pids


def _engine_args(plan: EnginePlan) -> dict[str, Any]:
    args: dict[str, Any] = {
        "model": str(plan.path) if plan.path is not None else plan.model_id,
        "served_model_name": [plan.model_id],
        "tensor_parallel_size": plan.tensor_parallel,
        "max_model_len": plan.max_model_len,
        "quantization": plan.quant,
        "disable_log_stats": True,
        "enable_log_requests": False,
    }
    if plan.device_kind == "cpu":
        kv_mb = plan.memory_mb - plan.weights_mb
        args["kv_cache_memory_bytes"] = kv_mb * _MIB
    else:
        per_device = plan.memory_mb / plan.tensor_parallel
        args["gpu_memory_utilization"] = round(per_device / min(plan.device_memory_mb), 4)
    return {**args, **plan.engine_args}


@contextlib.contextmanager
def _device_visibility(plan: EnginePlan) -> Iterator[None]:
    """Show the engine only its devices (by UUID, so NVML's order cannot mislead CUDA's)."""
    if plan.device_kind == "cpu":
        yield
        return
    saved = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(plan.device_uuids)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _load_error(exc: BaseException) -> CortexError:
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if "architecture" in lowered and "not supported" in lowered:
        return UnsupportedModelError(text)
    if "quantization" in lowered and ("not supported" in lowered or "unknown" in lowered):
        return UnsupportedModelError(text)
    if "memory" in lowered and any(
        word in lowered for word in ("out of memory", "insufficient", "not enough", "less than")
    ):
        return OutOfMemoryError(text)
    return LoadFailedError(text)


class VllmEngine:
    """One model served by vLLM in this process (its engine core runs in child processes)."""

    def __init__(self, v: Any, llm: Any, pids: list[int], plan: EnginePlan) -> None:
        self._v = v
        self._llm = llm
        self._pids = pids
        self.load_phases: dict[str, float] = {}
        self._tool_parser = plan.tool_call_parser
        template = plan.chat_template
        models = v.OpenAIServingModels(
            engine_client=llm,
            base_model_paths=[v.BaseModelPath(name=plan.model_id, model_path=str(plan.path))],
        )
        renderer = v.OnlineRenderer(
            model_config=llm.model_config,
            renderer=llm.renderer,
            request_logger=None,
            chat_template=template,
            chat_template_content_format="auto",
            enable_auto_tools=plan.tool_call_parser is not None,
            tool_parser=plan.tool_call_parser,
            reasoning_parser=plan.reasoning_parser,
        )
        self._chat = v.OpenAIServingChat(
            llm,
            models,
            "assistant",
            online_renderer=renderer,
            request_logger=None,
            chat_template=template,
            chat_template_content_format="auto",
            reasoning_parser=plan.reasoning_parser or "",
            enable_auto_tools=plan.tool_call_parser is not None,
            tool_parser=plan.tool_call_parser,
        )
        self._completion = v.OpenAIServingCompletion(
            llm, models, online_renderer=renderer, request_logger=None
        )
        self._responses = ResponsesServing(llm, models, renderer, plan)
        self._tokenization = v.ServingTokenization(
            models, renderer, chat_template=template, chat_template_content_format="auto"
        )

    @property
    def max_model_len(self) -> int:
        """The context length vLLM settled on."""
        return int(self._llm.model_config.max_model_len)

    @property
    def max_concurrency(self) -> int:
        """VLLM's batch size (``max_num_seqs``)."""
        return int(self._llm.vllm_config.scheduler_config.max_num_seqs)

    async def chat(self, body: bytes, request_id: str) -> Answer:
        """``/v1/chat/completions`` through vLLM's ``OpenAIServingChat``."""
        request = self._parse(self._v.ChatCompletionRequest, body, request_id)
        if request.tools and self._tool_parser is None and request.tool_choice != "none":
            request.tool_choice = "none"  # answered as text (DESIGN §3), not refused
        return await self._serve(self._chat.create_chat_completion, request)

    async def completion(self, body: bytes, request_id: str) -> Answer:
        """``/v1/completions`` through vLLM's ``OpenAIServingCompletion``."""
        request = self._parse(self._v.CompletionRequest, body, request_id)
        return await self._serve(self._completion.create_completion, request)

    async def responses(self, body: bytes, request_id: str) -> Answer:
        """``/v1/responses`` through vLLM's ``OpenAIServingResponses``."""
        request = self._parse(self._responses.request_type, body, f"resp_{request_id}")
        answer = await self._guarded(self._responses.create, request)
        if isinstance(answer, self._v.ErrorResponse):
            raise self._error(answer.error.model_dump())
        return self._responses.answer(answer, self._error, self._v.EngineDeadError)

    async def tokenize(self, request: TokenizeRequest) -> int:
        """Count with vLLM's tokenizer and the model's chat template."""
        if request.messages is not None:
            query = self._v.TokenizeChatRequest(
                model=request.model, messages=request.messages, tools=request.tools
            )
        else:
            query = self._v.TokenizeCompletionRequest(
                model=request.model, prompt=request.prompt or ""
            )
        answer = await self._guarded(self._tokenization.create_tokenize, query, None)
        if isinstance(answer, self._v.ErrorResponse):
            raise self._error(answer.error.model_dump())
        return int(answer.count)

    def stats(self) -> EngineStats:
        """Dead when vLLM says so or one of the engine's processes is gone."""
        gone = [pid for pid in self._pids if not alive(pid)]
        if self._llm.errored or gone:
            reason = f"engine process {gone[0]} exited" if gone else "vLLM's engine core died"
            return EngineStats(alive=False, error=reason)
        return EngineStats(unfinished_requests=self._llm.get_num_unfinished_requests())

    async def shutdown(self) -> None:
        """Stop vLLM (in a worker thread), then make sure its processes are gone.

        vLLM's output handler is cancelled first, here on the event loop: shut down from a
        worker thread, vLLM closes its sockets through the loop before it cancels the handler,
        which meanwhile reads the closed socket as a dead engine and logs a traceback.
        """
        handler = getattr(self._llm, "output_handler", None)
        if handler is not None:
            handler.cancel()
        await asyncio.to_thread(self._llm.shutdown)
        await asyncio.to_thread(reap, self._pids, _SHUTDOWN_TIMEOUT_S)

    def _parse(self, model: Any, body: bytes, request_id: str) -> Any:
        try:
            request = model.model_validate_json(body)
        except self._v.ValidationError as exc:
            raise InvalidRequestError(_pydantic_message(exc), param=_pydantic_param(exc)) from exc
        request.request_id = request_id
        return request

    async def _serve(self, create: Callable[..., Any], request: Any) -> Answer:
        limit = getattr(request, "max_completion_tokens", None) or request.max_tokens
        max_model_len = self.max_model_len
        if limit is not None and limit >= max_model_len:
            _lift_limit(request)
        try:
            answer = await self._guarded(create, request)
        except ContextLengthExceededError:
            if limit is None or limit >= max_model_len:
                raise
            _lift_limit(request)  # the prompt fits, the output asked for does not: fit it
            answer = await self._guarded(create, request)
        if isinstance(answer, self._v.ErrorResponse):
            raise self._error(answer.error.model_dump())
        if isinstance(answer, AsyncIterator):
            return self._events(answer)
        return bytes(answer.model_dump_json().encode())

    async def _guarded(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return await call(*args)
        except self._v.VLLMValidationError as exc:
            if exc.parameter in _PROMPT_TOO_LONG:
                raise ContextLengthExceededError(str(exc), param="messages") from exc
            raise InvalidRequestError(str(exc), param=exc.parameter) from exc
        except self._v.EngineDeadError as exc:
            raise EngineFailedError("vLLM's engine core died") from exc
        except (ValueError, TypeError) as exc:
            if "maximum context length" in str(exc):
                raise ContextLengthExceededError(str(exc), param="messages") from exc
            raise InvalidRequestError(str(exc)) from exc

    async def _events(self, stream: AsyncIterator[str]) -> AsyncIterator[bytes]:
        try:
            async for event in stream:
                if event.startswith('data: {"error"'):
                    detail = json.loads(event.removeprefix("data: "))["error"]
                    raise self._error(detail)
                yield event.encode()
        except self._v.EngineDeadError as exc:
            raise EngineFailedError("vLLM's engine core died") from exc
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    def _error(self, detail: dict[str, Any]) -> CortexError:
        """A vLLM error (``code`` is its HTTP status) as ours."""
        message = str(detail.get("message", "vLLM failed"))
        param = detail.get("param")
        status = detail.get("code")
        if self._llm.errored:
            return EngineFailedError(f"vLLM's engine core died: {message}")
        if param in _PROMPT_TOO_LONG:
            return ContextLengthExceededError(message, param="messages")
        by_status: dict[Any, type[CortexError]] = {
            400: InvalidRequestError,
            404: ModelNotFoundError,
            422: InvalidRequestError,
            429: RateLimitError,
            503: ServiceUnavailableError,
        }
        return by_status.get(status, EngineError)(message, param=param)


def _lift_limit(request: Any) -> None:
    request.max_tokens = None
    if hasattr(request, "max_completion_tokens"):  # chat only
        request.max_completion_tokens = None


def _pydantic_message(exc: Any) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    return f"{where}: {first.get('msg', 'invalid')}"


def _pydantic_param(exc: Any) -> str | None:
    loc = exc.errors()[0].get("loc", ())
    return str(loc[0]) if loc else None
