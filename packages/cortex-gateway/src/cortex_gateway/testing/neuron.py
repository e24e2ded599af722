"""A fake neuron: a real HTTP server on 127.0.0.1 that speaks DESIGN §3 as the real one does.

The lifecycle API (states, shared loads, drain and force unloads, an unload during a load,
failed loads, draining), auth on every route but ``/health``, the typed error envelope,
``/tokenize``, ``/v1/models``, ``/metrics``, admission with a 429 queue limit, and OpenAI
inference (streaming with ``: keep-alive`` during a long first token, or not, with usage). The
contract suite (tests/integration/test_neuron_contract.py) holds it to the real neuron.

Beyond the contract it keeps only the knobs tests need to inject faults (a load that fails, a
stream that dies or hangs, an engine that dies, a model unloaded under a request, failing
polls) and GPU-like memory accounting (:mod:`cortex_gateway.testing.memory`). It records what
it was sent. Tests and benchmarks only.
"""

import asyncio
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest

from cortex_core import encode
from cortex_core.errors import (
    AuthenticationError,
    CortexError,
    EngineError,
    InvalidRequestError,
    ShuttingDownError,
)
from cortex_core.ids import check_model_id
from cortex_core.wire.control import (
    Discovery,
    EndpointResponse,
    Health,
    LoadResponse,
    ModelSpec,
    TokenizeRequest,
    TokenizeResponse,
    UnloadRequest,
    UnloadResponse,
)
from cortex_core.wire.inference import StreamOptions
from cortex_core.wire.models import ModelCard, ModelList
from cortex_gateway.testing import envelopes, replies, responses
from cortex_gateway.testing.lifecycle import FakeLifecycle
from cortex_gateway.testing.models import Admitted, FakeModel
from cortex_gateway.testing.replies import PROMPT_TOKENS

__all__ = ["PROMPT_TOKENS", "FakeModel", "FakeNeuron", "Recorded"]


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


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _json(obj: Any) -> web.Response:
    return web.Response(body=encode(obj), content_type="application/json")


class FakeNeuron(FakeLifecycle):
    """A neuron on ``127.0.0.1`` with knobs; use as ``async with FakeNeuron(...) as neuron``.

    Args:
        models: Model ids (or :class:`FakeModel`) it knows, all ``available``.
        loaded: Ids among them that start loaded (on device 0; a :class:`FakeModel`'s
            ``memory_mb``, else 1000 MiB).
        device_mb: Memory of each device.
        devices: How many devices.
        token: The bearer token every route but ``/health`` demands ("" for none).
        record: Keep each inference request in :attr:`requests` (off for benchmarks).
        concurrency: Requests a model runs at once.
        max_queued: Requests that may wait beyond those; more are refused with 429.
        drain_timeout_s: How long a ``drain`` unload waits for requests in flight.
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
        concurrency: int = 64,
        max_queued: int = 64,
        drain_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(
            models,
            loaded=loaded,
            device_mb=device_mb,
            devices=devices,
            concurrency=concurrency,
            max_queued=max_queued,
            drain_timeout_s=drain_timeout_s,
        )
        self.token = token
        self.record = record
        self.latency = 0.0
        """Seconds before an answer (a stream's first chunk: ``: keep-alive`` meanwhile)."""
        self.keepalive_s = 1.0
        self.chunks = 3
        """Content chunks of a stream or tokens of an answer, when ``max_tokens`` is absent."""
        self.chunk_interval = 0.0
        self.die_after: int | None = None
        """Content chunks sent before the connection is cut mid-stream."""
        self.hang_after: int | None = None
        """Content chunks sent before the stream goes silent (until aborted)."""
        self.races: dict[str, int] = {}
        """Model id → how many of its next requests find it unloaded (a race with an unload)."""
        self.infer_error: CortexError | None = None
        """An error every inference request is answered with, as the neuron would send it."""
        self.send_done = True
        """Whether a stream ends with ``data: [DONE]`` (a broken neuron's would not)."""
        self.broken: str | None = None
        """How a broken neuron answers inference: ``silent`` (never), ``trickle`` (a 200 JSON
        answer a byte a second), ``garbage`` (200, not JSON), ``malformed`` (200, JSON cut)."""
        self.poll_status = 200
        self.poll_delay = 0.0
        self.started_at = time.time()
        self.requests: list[Recorded] = []
        self.tokenized: list[TokenizeRequest] = []
        self.control_headers: list[dict[str, str]] = []
        self.endpoint_calls = 0
        self.aborted = 0
        self.abort_seen = asyncio.Event()
        self._registry = CollectorRegistry()
        self._requests_total = Counter(
            "neuron_requests",
            "Inference requests answered.",
            ["model", "route", "status"],
            registry=self._registry,
        )
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> "FakeNeuron":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, port: int = 0) -> None:
        """Serve on ``127.0.0.1:port`` (0: a free port); :attr:`url` says where."""
        app = web.Application(middlewares=[envelopes.envelopes, self._auth])
        app.add_routes(
            [
                web.get("/discovery", self._discovery),
                web.get("/health", self._health),
                web.get("/models", self._models),
                web.post("/models/load", self._load),
                web.post("/models/unload", self._unload),
                web.get(r"/models/{model_id:.+}/endpoint", self._endpoint),
                web.post("/tokenize", self._tokenize),
                web.get("/v1/models", self._v1_models),
                web.get("/metrics", self._metrics),
                web.post("/v1/chat/completions", self._infer),
                web.post("/v1/completions", self._infer),
                web.post("/v1/responses", self._infer),  # testing/responses.py
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

    @web.middleware
    async def _auth(self, request: web.Request, handler: envelopes.Handler) -> web.StreamResponse:
        if request.path == "/health" or not self.token:
            return await handler(request)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            error = AuthenticationError(
                "a valid `Authorization: Bearer <token>` header is required"
            )
            response = envelopes.error(error)
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return await handler(request)

    async def _control(self, request: web.Request) -> None:
        self.control_headers.append(_lower(request.headers))
        if self.poll_delay:
            await asyncio.sleep(self.poll_delay)
        if self.poll_status != 200:
            raise EngineError(f"injected failure {self.poll_status}", code="fake_failure")

    async def _discovery(self, request: web.Request) -> web.Response:
        await self._control(request)
        return _json(
            Discovery(
                hostname="fake",
                os="Linux",
                kernel="6.8.0",
                version="0.1.0",
                harnesses=["vllm"],
                devices=self.memory.devices(),
            )
        )

    async def _health(self, request: web.Request) -> web.Response:
        await self._control(request)
        return _json(
            Health(
                uptime_secs=int(time.time() - self.started_at),
                draining=self.draining,
                devices=self.memory.health(),
                models=self.activity(),
            )
        )

    async def _models(self, request: web.Request) -> web.Response:
        await self._control(request)
        return _json([self.models[i].info() for i in sorted(self.models)])

    async def _load(self, request: web.Request) -> web.Response:
        self.control_headers.append(_lower(request.headers))
        info = await self.load(envelopes.decode(await request.read(), ModelSpec))
        return _json(LoadResponse(model=info))

    async def _unload(self, request: web.Request) -> web.Response:
        await self.unload(envelopes.decode(await request.read(), UnloadRequest))
        return _json(UnloadResponse())

    async def _endpoint(self, request: web.Request) -> web.Response:
        self.endpoint_calls += 1
        self.serving(check_model_id(request.match_info["model_id"]))
        return _json(EndpointResponse(url=self.url))

    async def _tokenize(self, request: web.Request) -> web.Response:
        body: TokenizeRequest = envelopes.decode(await request.read(), TokenizeRequest)
        if body.messages is None and body.prompt is None:
            raise InvalidRequestError("`messages` or `prompt` is required", param="messages")
        self.tokenized.append(body)
        model = self.serving(check_model_id(body.model))
        return _json(
            TokenizeResponse(count=replies.token_count(body), max_model_len=model.max_model_len)
        )

    async def _v1_models(self, request: web.Request) -> web.Response:
        loaded = [self.models[i] for i in sorted(self.models)]
        cards = [
            ModelCard(
                id=m.id,
                created=int(m.loaded_at or 0),
                owned_by="neuron",
                max_model_len=m.max_model_len,
            )
            for m in loaded
            if m.status == "loaded"
        ]
        return _json(ModelList(data=cards))

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self._registry), content_type="text/plain")

    async def _infer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.record:
            self.requests.append(Recorded(request.path, _lower(request.headers), body))
        req: _Request = envelopes.decode(body, _Request)
        model_id = check_model_id(req.model)
        if self.broken is not None:
            return await self._broken(request, req)
        route = {"/v1/chat/completions": "chat", "/v1/responses": "responses"}.get(
            request.path, "completion"
        )
        try:
            if route == "responses":
                response = await responses.serve(self, request, body)
            else:
                response = await self._answer(request, req, model_id)
        except CortexError as exc:
            self._requests_total.labels(model_id, route, str(exc.status_code)).inc()
            raise
        self._requests_total.labels(model_id, route, "200").inc()
        return response

    async def _broken(self, request: web.Request, req: _Request) -> web.StreamResponse:
        if self.broken == "silent":
            await asyncio.Event().wait()  # until the gateway gives up and hangs up
        if self.broken == "garbage":
            return web.Response(body=b"<html>upstream proxy error</html>", content_type="text/html")
        whole = encode(replies.answer(request.path, req.model, self.chunks))
        if self.broken == "malformed":
            return web.Response(body=whole[: len(whole) // 2], content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for i in range(len(whole)):
            await response.write(whole[i : i + 1])
            await asyncio.sleep(1)
        await response.write_eof()
        return response

    async def _answer(
        self, request: web.Request, req: _Request, model_id: str
    ) -> web.StreamResponse:
        if self.draining:
            raise ShuttingDownError("the neuron is shutting down", retry_after=5)
        if self.races.get(model_id) and model_id in self.models:
            self.races[model_id] -= 1
            self._release(self.models[model_id], "available")
        model = self.serving(model_id)
        if self.infer_error is not None:
            raise self.infer_error
        admitted = model.admit(self.concurrency, self.max_queued)
        try:
            tokens = req.max_tokens or self.chunks
            if req.stream:
                return await self._stream(request, req, tokens, admitted)
            if await self._pause(admitted, self.latency):
                assert admitted.error is not None
                raise admitted.error
            return _json(replies.answer(request.path, req.model, tokens))
        except (asyncio.CancelledError, ConnectionResetError):
            self.aborted += 1
            self.abort_seen.set()
            raise
        finally:
            model.admitted.discard(admitted)
            model.last_used = time.time()

    async def _pause(self, admitted: Admitted, seconds: float) -> bool:
        """Wait ``seconds``; whether the request was aborted meanwhile."""
        if seconds <= 0:
            return admitted.aborted.is_set()
        try:
            await asyncio.wait_for(admitted.aborted.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _cut(self, request: web.Request, sent: int, admitted: Admitted) -> bool:
        """Die (True) or hang here, as the knobs say, after ``sent`` content chunks."""
        if sent == self.die_after:
            assert request.transport is not None
            request.transport.close()
            return True
        if sent == self.hang_after:
            await admitted.aborted.wait()
        return False

    async def _stream(
        self, request: web.Request, req: _Request, tokens: int, admitted: Admitted
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chat = request.path.endswith("/chat/completions")
        waited = 0.0
        while waited < self.latency:  # a long prefill: a comment every keepalive_s
            step = min(self.keepalive_s, self.latency - waited)
            if await self._pause(admitted, step):
                return await self._end(response, admitted)
            waited += step
            if waited < self.latency:
                await response.write(replies.KEEPALIVE)
        await response.write(replies.event(replies.chunk(chat, req.model, None, role=True)))
        for i in range(tokens):
            if await self._cut(request, i, admitted):
                return response
            if await self._pause(admitted, self.chunk_interval):
                return await self._end(response, admitted)
            await response.write(replies.event(replies.chunk(chat, req.model, f"tok{i} ")))
        if await self._cut(request, tokens, admitted):
            return response
        if admitted.aborted.is_set():
            return await self._end(response, admitted)
        await response.write(replies.event(replies.chunk(chat, req.model, None, finish=True)))
        if req.stream_options is not None and req.stream_options.include_usage:
            usage = {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": tokens,
                "total_tokens": PROMPT_TOKENS + tokens,
            }
            last = {**replies.chunk(chat, req.model, None), "choices": [], "usage": usage}
            await response.write(replies.event(last))
        if self.send_done:
            await response.write(replies.DONE)
        await response.write_eof()
        return response

    async def _end(self, response: web.StreamResponse, admitted: Admitted) -> web.StreamResponse:
        """End an aborted stream as the real neuron does: an error event, then ``[DONE]``."""
        assert admitted.error is not None
        await response.write(replies.error_event(admitted.error) + replies.DONE)
        await response.write_eof()
        return response
