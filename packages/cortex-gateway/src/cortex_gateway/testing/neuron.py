"""A fake neuron: a real HTTP server on 127.0.0.1 that follows DESIGN §3, with knobs.

The lifecycle API with memory accounting and shared loads, and OpenAI inference (streaming or
not, with usage). Its knobs make the failures tests need: latency, chunk count and pace, load
time, load refusals by code, death or silence mid-stream, ``model_not_loaded`` races, failing
polls. It records what it was sent. Tests and benchmarks only.
"""

import asyncio
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from cortex_core import encode
from cortex_core.wire.control import (
    Device,
    DeviceHealth,
    Discovery,
    EndpointResponse,
    Health,
    LoadResponse,
    ModelActivity,
    ModelInfo,
    ModelSpec,
    ModelStatus,
    TokenizeRequest,
    TokenizeResponse,
    UnloadRequest,
    UnloadResponse,
)
from cortex_core.wire.inference import StreamOptions, Usage

__all__ = ["PROMPT_TOKENS", "FakeModel", "FakeNeuron", "Recorded"]

PROMPT_TOKENS = 7
"""The prompt size every fake answer reports in its usage."""


@dataclass
class FakeModel:
    """A model the fake neuron knows; ``memory_mb`` is its footprint once loaded."""

    id: str
    status: ModelStatus = "available"
    memory_mb: int = 1000
    max_model_len: int = 4096
    devices: list[int] = field(default_factory=list)
    in_flight: int = 0
    last_used: float | None = None

    def info(self) -> ModelInfo:
        """``GET /models``'s entry."""
        loaded = self.status == "loaded"
        return ModelInfo(
            id=self.id,
            status=self.status,
            devices=self.devices if loaded else [],
            memory_mb=self.memory_mb if loaded else None,
            max_model_len=self.max_model_len if loaded else None,
            in_flight=self.in_flight,
            last_used=self.last_used,
        )


@dataclass(frozen=True)
class Recorded:
    """An inference request the fake received."""

    path: str
    headers: dict[str, str]
    body: bytes


class _Request(msgspec.Struct):
    model: str
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None


def _error(status: int, code: str, message: str = "") -> web.Response:
    body = {"error": {"message": message or code, "type": "fake", "param": None, "code": code}}
    return web.Response(status=status, body=encode(body), content_type="application/json")


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _json(obj: Any) -> web.Response:
    return web.Response(body=encode(obj), content_type="application/json")


class FakeNeuron:
    """A neuron on ``127.0.0.1`` with knobs; use as ``async with FakeNeuron(...) as neuron``.

    Args:
        models: Model ids (or :class:`FakeModel`) it knows, all ``available``.
        loaded: Ids among them that start loaded (on device 0).
        device_mb: Memory of each device.
        devices: How many devices.
        token: The bearer token it demands ("" for none).
        record: Keep each inference request in :attr:`requests` (off for benchmarks).
    """

    def __init__(
        self,
        models: Iterable[str | FakeModel] = (),
        *,
        loaded: Iterable[str] = (),
        device_mb: int = 24000,
        devices: int = 1,
        token: str = "",
        record: bool = True,
    ) -> None:
        self.models = {
            m.id: m for m in (m if isinstance(m, FakeModel) else FakeModel(m) for m in models)
        }
        for model_id in loaded:
            self.models[model_id].status = "loaded"
            self.models[model_id].devices = [0]
        self.device_mb = [device_mb] * devices
        self.token = token
        self.record = record
        self.latency = 0.0
        """Seconds before an answer (a stream's first chunk)."""
        self.chunks = 3
        """Content chunks of a stream or tokens of an answer, when ``max_tokens`` is absent."""
        self.chunk_interval = 0.0
        self.load_time = 0.0
        self.load_failures: dict[str, tuple[int, str]] = {}
        """Model id → (status, code) every load of it is refused with."""
        self.die_after: int | None = None
        """Content chunks sent before the connection is cut mid-stream."""
        self.hang_after: int | None = None
        """Content chunks sent before the stream goes silent for good."""
        self.races: dict[str, int] = {}
        """Model id → how many of its next requests find it unloaded (a race with an unload)."""
        self.infer_error: tuple[int, bytes, dict[str, str]] | None = None
        """(status, body, headers) every inference request is answered with (vLLM's 4xx)."""
        self.send_done = True
        """Whether a stream ends with ``data: [DONE]`` (a broken neuron's would not)."""
        self.poll_status = 200
        self.poll_delay = 0.0
        self.draining = False
        self.started_at = time.time()
        self.requests: list[Recorded] = []
        self.loads: list[ModelSpec] = []
        self.unloads: list[UnloadRequest] = []
        self.tokenized: list[TokenizeRequest] = []
        self.control_headers: list[dict[str, str]] = []
        self.endpoint_calls = 0
        self.aborted = 0
        self.abort_seen = asyncio.Event()
        self._loading: dict[str, asyncio.Future[None]] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> "FakeNeuron":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, port: int = 0) -> None:
        """Serve on ``127.0.0.1:port`` (0: a free port); :attr:`url` says where."""
        app = web.Application()
        app.add_routes(
            [
                web.get("/discovery", self._discovery),
                web.get("/health", self._health),
                web.get("/models", self._models),
                web.post("/models/load", self._load),
                web.post("/models/unload", self._unload),
                web.get(r"/models/{model_id:.+}/endpoint", self._endpoint),
                web.post("/tokenize", self._tokenize),
                web.post("/v1/chat/completions", self._infer),
                web.post("/v1/completions", self._infer),
            ]
        )
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        sock = socket.create_server(("127.0.0.1", port))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def stop(self) -> None:
        """Stop serving (connections in progress are dropped)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _refused(self, request: web.Request) -> web.Response | None:
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "invalid_api_key", "wrong or missing token")
        return None

    def _used(self, index: int) -> int:
        return sum(
            m.memory_mb // len(m.devices)
            for m in self.models.values()
            if m.status in ("loaded", "loading") and index in m.devices
        )

    async def _control(self, request: web.Request) -> web.Response | None:
        self.control_headers.append(_lower(request.headers))
        if self.poll_delay:
            await asyncio.sleep(self.poll_delay)
        if self.poll_status != 200:
            return _error(self.poll_status, "fake_failure")
        return self._refused(request)

    async def _discovery(self, request: web.Request) -> web.Response:
        refused = await self._control(request)
        return refused or _json(
            Discovery(
                hostname="fake",
                os="Linux",
                kernel="6.8.0",
                version="0.1.0",
                harnesses=["vllm"],
                devices=[
                    Device(
                        index=i, kind="gpu", uuid=f"GPU-{i}", name="Fake GPU", memory_total_mb=mb
                    )
                    for i, mb in enumerate(self.device_mb)
                ],
            )
        )

    async def _health(self, request: web.Request) -> web.Response:
        refused = await self._control(request)
        devices = [
            DeviceHealth(
                index=i,
                memory_used_mb=self._used(i),
                memory_free_mb=mb - self._used(i),
                utilization_pct=10,
                temp_c=40,
            )
            for i, mb in enumerate(self.device_mb)
        ]
        activity = [
            ModelActivity(id=m.id, in_flight=m.in_flight)
            for m in self.models.values()
            if m.status == "loaded"
        ]
        uptime = int(time.time() - self.started_at)
        return refused or _json(
            Health(uptime_secs=uptime, draining=self.draining, devices=devices, models=activity)
        )

    async def _models(self, request: web.Request) -> web.Response:
        refused = await self._control(request)
        return refused or _json([m.info() for m in self.models.values()])

    async def _load(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused:
            return refused
        self.control_headers.append(_lower(request.headers))
        spec = msgspec.json.decode(await request.read(), type=ModelSpec)
        self.loads.append(spec)
        if spec.model_id in self.load_failures:
            status, code = self.load_failures[spec.model_id]
            return _error(status, code, f"fake refusal: {code}")
        model = self.models.get(spec.model_id)
        if model is None:
            return _error(404, "model_not_found")
        if model.status != "loaded":
            waiting = self._loading.get(model.id)
            if waiting is not None:
                await asyncio.shield(waiting)
            else:
                refused = self._start_load(model, spec)
                if refused:
                    return refused
                self._loading[model.id] = asyncio.get_running_loop().create_future()
                try:
                    await asyncio.sleep(self.load_time)
                    model.status = "loaded"
                finally:
                    self._loading.pop(model.id).set_result(None)
        return _json(LoadResponse(model=model.info()))

    def _start_load(self, model: FakeModel, spec: ModelSpec) -> web.Response | None:
        devices = spec.devices or [0]
        memory = spec.memory_mb or model.memory_mb
        per_device = memory // len(devices)
        if any(self.device_mb[i] - self._used(i) < per_device for i in devices):
            return _error(507, "out_of_memory", f"{memory} MiB do not fit")
        model.status, model.devices, model.memory_mb = "loading", list(devices), memory
        return None

    async def _unload(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused:
            return refused
        unload = msgspec.json.decode(await request.read(), type=UnloadRequest)
        self.unloads.append(unload)
        model = self.models.get(unload.model_id)
        if model is None or model.status != "loaded":
            return _error(404, "model_not_loaded")
        if model.in_flight and not unload.force:
            return _error(409, "model_busy", f"{model.in_flight} requests in flight")
        model.status, model.devices = "available", []
        return _json(UnloadResponse())

    async def _endpoint(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused:
            return refused
        self.endpoint_calls += 1
        model = self.models.get(request.match_info["model_id"])
        if model is None or model.status != "loaded":
            return _error(404, "model_not_loaded")
        return _json(EndpointResponse(url=self.url))

    async def _tokenize(self, request: web.Request) -> web.Response:
        """Counts ``PROMPT_TOKENS`` per message (and per tool) of a loaded model."""
        refused = self._refused(request)
        if refused:
            return refused
        asked = msgspec.json.decode(await request.read(), type=TokenizeRequest)
        self.tokenized.append(asked)
        model = self.models.get(asked.model)
        if model is None or model.status != "loaded":
            return _error(404, "model_not_loaded")
        count = PROMPT_TOKENS * (len(asked.messages or ()) + len(asked.tools or ()))
        return _json(TokenizeResponse(count=count, max_model_len=model.max_model_len))

    async def _infer(self, request: web.Request) -> web.StreamResponse:
        refused = self._refused(request)
        if refused:
            return refused
        body = await request.read()
        if self.record:
            self.requests.append(Recorded(request.path, _lower(request.headers), body))
        req = msgspec.json.decode(body, type=_Request)
        model = self.models.get(req.model)
        if model is None:
            return _error(404, "model_not_found")
        if self.races.get(model.id):
            self.races[model.id] -= 1
            model.status, model.devices = "available", []
        if model.status != "loaded":
            return _error(404, "model_not_loaded", f"{model.id} is not loaded")
        if self.infer_error is not None:
            status, payload, headers = self.infer_error
            return web.Response(status=status, body=payload, headers=headers)
        model.in_flight += 1
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            tokens = req.max_tokens or self.chunks
            if req.stream:
                return await self._stream(request, req, tokens)
            return _json(_answer(request.path, req.model, tokens))
        except (asyncio.CancelledError, ConnectionResetError):
            self.aborted += 1
            self.abort_seen.set()
            raise
        finally:
            model.in_flight -= 1
            model.last_used = time.time()

    async def _cut(self, request: web.Request, sent: int) -> bool:
        """Die (True) or hang here, as the knobs say, after ``sent`` content chunks."""
        if sent == self.die_after:
            assert request.transport is not None
            request.transport.close()
            return True
        if sent == self.hang_after:
            await asyncio.Event().wait()
        return False

    async def _stream(self, request: web.Request, req: _Request, tokens: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chat = request.path.endswith("/chat/completions")
        await response.write(_event(_chunk(chat, req.model, None, role=True)))
        for i in range(tokens):
            if await self._cut(request, i):
                return response
            if self.chunk_interval:
                await asyncio.sleep(self.chunk_interval)
            await response.write(_event(_chunk(chat, req.model, f"tok{i} ")))
        if await self._cut(request, tokens):
            return response
        await response.write(_event(_chunk(chat, req.model, None, finish=True)))
        if req.stream_options is not None and req.stream_options.include_usage:
            usage = Usage(
                prompt_tokens=PROMPT_TOKENS,
                completion_tokens=tokens,
                total_tokens=PROMPT_TOKENS + tokens,
            )
            await response.write(
                _event({**_chunk(chat, req.model, None), "choices": [], "usage": usage})
            )
        if self.send_done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _event(obj: Any) -> bytes:
    return b"data: " + encode(obj) + b"\n\n"


def _chunk(
    chat: bool, model: str, text: str | None, *, role: bool = False, finish: bool = False
) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop" if finish else None}
    if chat:
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
        if text is not None:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text or ""
    kind = "chat.completion.chunk" if chat else "text_completion"
    return {"id": "fake-1", "object": kind, "created": 0, "model": model, "choices": [choice]}


def _answer(path: str, model: str, tokens: int) -> dict[str, Any]:
    text = "".join(f"tok{i} " for i in range(tokens))
    usage = {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": tokens,
        "total_tokens": PROMPT_TOKENS + tokens,
    }
    if path.endswith("/chat/completions"):
        message = {"role": "assistant", "content": text}
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": "stop"}
        kind = "chat.completion"
    else:
        choice, kind = {"index": 0, "text": text, "finish_reason": "stop"}, "text_completion"
    return {
        "id": "fake-1",
        "object": kind,
        "created": 0,
        "model": model,
        "choices": [choice],
        "usage": usage,
    }
