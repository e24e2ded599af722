"""``POST /v1/chat/completions`` and ``/v1/completions``: route, forward, relay, account.

The body is read once (refused with 413 from ``Content-Length`` alone when too large), decoded
only for its routing fields, and forwarded as bytes with DESIGN §4's edits only: an alias
replaced by its id and, for streams, ``stream_options.include_usage`` set. Nothing is answered
until the neuron has answered (no early 200), so routing and load errors keep their status.
A request that has sent nothing yet is retried once when its node cannot be reached or says
``model_not_loaded``; a neuron's own error answer passes through unchanged. A client that goes
away cancels everything down to the neuron's request.
"""

import asyncio
import functools
import re
import time
from typing import Any

import msgspec
from starlette.types import Receive, Scope, Send

from cortex_core import decode, encode
from cortex_core.errors import (
    CortexError,
    ErrorEnvelope,
    InvalidRequestError,
    ModelNotLoadedError,
    RequestTooLargeError,
    UpstreamError,
)
from cortex_core.wire.inference import InferenceRequest, UsageReport
from cortex_gateway.context import AppContext, context
from cortex_gateway.control.routing import Target
from cortex_gateway.errors import refuse_unread, send_error
from cortex_gateway.inference.openai import StreamRelay
from cortex_gateway.metrics import UNKNOWN, RequestSeries
from cortex_gateway.upstream import ConnectError, UpstreamResponse, peer_error

__all__ = ["InferenceEndpoint", "edit_body"]

_RETRYABLE = (ConnectError, ModelNotLoadedError)


class _ClientGoneError(Exception):
    """The client disconnected before its body arrived."""


class _StreamOptions(msgspec.Struct):
    stream_options: dict[str, Any] | None = None


@functools.lru_cache(maxsize=256)
def _model_member(name: str) -> re.Pattern[bytes]:
    return re.compile(rb'"model"\s*:\s*"' + re.escape(name.encode()) + rb'"')


def _add_member(body: bytes, member: bytes) -> bytes:
    # The body decoded as an object, so its last non-blank byte is the closing brace. JSON
    # parsers keep the last of two equal keys, so an added member overrides an earlier one.
    end = body.rstrip().rfind(b"}")
    return body[:end] + b"," + member + body[end:]


def edit_body(body: bytes, request: InferenceRequest, model_id: str) -> bytes:
    """``body`` with DESIGN §4's edits: the model's id for an alias, usage asked of streams."""
    if request.model != model_id:
        member = b'"model":' + encode(model_id)
        found = list(_model_member(request.model).finditer(body))
        if len(found) == 1:  # only the top-level key can be it: splice in place
            body = body[: found[0].start()] + member + body[found[0].end() :]
        else:
            body = _add_member(body, member)
    if request.streaming and not request.wants_usage:
        options = decode(body, _StreamOptions).stream_options or {}
        body = _add_member(body, b'"stream_options":' + encode({**options, "include_usage": True}))
    return body


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        # The server's HTTP parser has checked that Content-Length is a number.
        if name == b"content-length" and int(value) > limit:
            raise RequestTooLargeError(
                f"The body is {int(value)} bytes; this gateway takes at most {limit}"
            )
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(
                f"The body is over {limit} bytes, the most this gateway takes"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class InferenceEndpoint:
    """The ASGI app of one OpenAI inference route (``path`` is also the neuron's route)."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one inference request."""
        ctx = context(scope)
        exchange = _Exchange(ctx, self.path, send)
        try:
            body = await _read_body(scope, receive, ctx.config.gateway.max_body_bytes)
        except _ClientGoneError:
            return
        except CortexError as exc:
            await exchange.refuse(exc, receive)
            return
        await exchange.run(body, receive)


class _Exchange:
    """One request's way through the gateway, and its accounting."""

    def __init__(self, ctx: AppContext, path: str, send: Send) -> None:
        self.ctx = ctx
        self.path = path
        self.send = send
        self.started = time.perf_counter()
        self.model = self.node = UNKNOWN
        self.live = False
        """Whether a client disconnect should cancel the work (until the last send)."""
        self.gone = False

    @property
    def series(self) -> RequestSeries:
        """The metrics of this request's model and node, as far as they are known."""
        return self.ctx.metrics.series(self.model, self.node)

    async def run(self, body: bytes, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(self._watch(receive, task))
        self.live = True
        try:
            await self._serve(body)
        except asyncio.CancelledError:
            if not self.gone or task.cancelling() > 1:
                raise
            task.uncancel()
            self.series.failed("client_disconnected")
            self.series.finished(499, time.perf_counter() - self.started)
        finally:
            self.live = False
            watcher.cancel()

    async def _watch(self, receive: Receive, task: "asyncio.Task[Any]") -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        # Cancel only while the handler waits inside the work, so the cancellation lands there.
        if self.live:
            self.gone = True
            task.cancel()

    async def refuse(self, exc: CortexError, unread: Receive | None = None) -> None:
        """Answer ``exc`` (nothing has been sent) and count it; ``unread``: the body's."""
        self.live = False
        self.series.failed(exc.code)
        if unread is None:
            await send_error(self.send, exc)
        else:
            await refuse_unread(self.send, unread, exc)
        self.series.finished(exc.status_code, time.perf_counter() - self.started)

    async def _serve(self, body: bytes) -> None:
        try:
            request = decode(body, InferenceRequest)
            model_id = self.ctx.catalogue.resolve(request.model)
        except CortexError as exc:
            await self.refuse(exc)
            return
        self.model = model_id
        forwarded = edit_body(body, request, model_id)
        exclude: frozenset[str] = frozenset()
        for final in (False, True):
            try:
                target = await self.ctx.router.route(model_id, exclude)
            except CortexError as exc:
                await self.refuse(exc)
                return
            try:
                await self._forward(target, forwarded, request, model_id, final=final)
                return
            except _RETRYABLE as exc:
                if final:
                    await self.refuse(exc)
                    return
                self.series.failed(exc.code)
                if isinstance(exc, ConnectError):
                    exclude = frozenset({target.node.name})
                else:
                    self.ctx.router.forget(target, model_id)
            except CortexError as exc:
                await self.refuse(exc)
                return

    async def _forward(
        self, target: Target, body: bytes, request: InferenceRequest, model_id: str, *, final: bool
    ) -> None:
        node, options = target.node, self.ctx.config.gateway
        self.node = node.name
        series = self.series
        streaming = request.streaming
        node.active[model_id] = node.active.get(model_id, 0) + 1
        series.in_flight.inc()
        try:
            async with self.ctx.upstream.send(
                node.peer,
                target.url + self.path,
                body,
                total=None if streaming else options.request_timeout_s,
                idle=options.idle_timeout_s if streaming else None,
            ) as resp:
                content_type = resp.header("content-type") or "application/json"
                if resp.status >= 400:
                    payload = await resp.read()
                    if resp.status == 404 and not final:
                        error = peer_error(node.name, resp.status, payload, None)
                        if isinstance(error, ModelNotLoadedError):
                            raise error
                    await self._pass_error(resp, payload, content_type)
                elif streaming and content_type.startswith("text/event-stream"):
                    await self._relay(resp, request, series, node.name)
                else:
                    await self._answer(resp, content_type)
        finally:
            node.active[model_id] -= 1
            series.in_flight.dec()

    async def _start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def _end(self, status: int, body: bytes) -> None:
        self.live = False
        await self.send({"type": "http.response.body", "body": body})
        self.series.finished(status, time.perf_counter() - self.started)

    async def _pass_error(self, resp: UpstreamResponse, payload: bytes, content_type: str) -> None:
        try:
            code = decode(payload, ErrorEnvelope).error.code or f"http_{resp.status}"
        except InvalidRequestError:
            code = f"http_{resp.status}"
        self.series.failed(code)
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", b"%d" % len(payload)),
        ]
        retry_after = resp.header("retry-after")
        if retry_after is not None:
            headers.append((b"retry-after", retry_after.encode()))
        await self._start(resp.status, headers)
        await self._end(resp.status, payload)

    async def _answer(self, resp: UpstreamResponse, content_type: str) -> None:
        payload = await resp.read()
        try:
            usage = decode(payload, UsageReport).usage
        except InvalidRequestError:
            usage = None
        if usage is not None:
            self.series.usage(usage.prompt_tokens, usage.completion_tokens)
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", b"%d" % len(payload)),
        ]
        await self._start(resp.status, headers)
        await self._end(resp.status, payload)

    async def _relay(
        self, resp: UpstreamResponse, request: InferenceRequest, series: RequestSeries, node: str
    ) -> None:
        await self._start(
            resp.status, [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        )
        first_token_at = 0.0

        def first_token() -> None:
            nonlocal first_token_at
            first_token_at = time.perf_counter()
            series.ttft.observe(first_token_at - self.started)

        relay = StreamRelay(self.send, wants_usage=request.wants_usage, on_first_token=first_token)
        try:
            while chunk := await resp.read_chunk():
                await relay.feed(chunk)
            await relay.finish()
            if not relay.done:
                raise UpstreamError(f"neuron {node} ended the stream before data: [DONE]")
        except CortexError as exc:
            series.failed(exc.code)
            await relay.fail(exc)
        ended = time.perf_counter()
        usage = relay.usage
        if usage is not None:
            series.usage(usage.prompt_tokens, usage.completion_tokens)
            if first_token_at and usage.completion_tokens > 1 and ended > first_token_at:
                series.tokens_per_second.observe(
                    (usage.completion_tokens - 1) / (ended - first_token_at)
                )
        await self._end(resp.status, b"")
