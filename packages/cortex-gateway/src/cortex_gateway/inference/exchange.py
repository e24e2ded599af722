"""One inference request's way through the gateway, whatever its dialect: the transport.

The body is read once (refused with 413 from ``Content-Length`` alone when too large) and
handed to the route's dialect, which says what model it names and what the neuron is sent.
Nothing is answered until the neuron has answered (no early 200), so routing and load errors
keep their status. A request that has sent nothing yet is retried once when its node cannot be
reached or says ``model_not_loaded``; every other answer of the neuron goes back through the
dialect. A client that goes away cancels everything down to the neuron's request. Every
request is counted once, with its status, however it ends.
"""

import asyncio
import time
from collections.abc import Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from cortex_core.asgi import disconnected
from cortex_core.errors import (
    CortexError,
    ModelNotLoadedError,
    RequestTooLargeError,
    UpstreamError,
    UpstreamTimeoutError,
)
from cortex_gateway.context import AppContext, context
from cortex_gateway.control.routing import Target
from cortex_gateway.errors import refuse_unread, send_error
from cortex_gateway.inference.dialect import Answer, Call
from cortex_gateway.metrics import UNKNOWN, RequestSeries
from cortex_gateway.upstream import ConnectError, UpstreamResponse
from cortex_gateway.web.recent import RequestRecord

__all__ = ["InferenceEndpoint"]

_RETRYABLE = (ConnectError, ModelNotLoadedError)
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class _ClientGoneError(Exception):
    """The client disconnected before its body arrived."""


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
    """The ASGI app of one inference route; ``dialect`` makes each request's :class:`Call`.

    ``name``: the dialect's, as the status page's recent requests show it.
    """

    def __init__(self, dialect: Callable[[bytes], Call], name: str) -> None:
        self.dialect = dialect
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one inference request."""
        ctx = context(scope)
        exchange = _Exchange(ctx, scope["path"], send, self.name)
        try:
            body = await _read_body(scope, receive, ctx.config.gateway.max_body_bytes)
        except _ClientGoneError:
            return
        except CortexError as exc:
            await exchange.refuse(exc, receive)
            return
        await exchange.run(body, self.dialect, receive)


class _Exchange:
    """One request's way through the gateway, and its accounting."""

    def __init__(self, ctx: AppContext, path: str, send: Send, dialect: str) -> None:
        self.ctx = ctx
        self.path = path
        self.send = send
        self.dialect = dialect
        self.ttft: float | None = None
        self.tokens: int | None = None
        self.tps: float | None = None
        self.started = time.perf_counter()
        self.model = self.node = UNKNOWN
        self.live = False
        """Whether a client disconnect should cancel the work (until the last send)."""
        self.gone = False

    @property
    def series(self) -> RequestSeries:
        """The metrics of this request's model and node, as far as they are known."""
        return self.ctx.metrics.series(self.model, self.node)

    async def run(self, body: bytes, dialect: Callable[[bytes], Call], receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(self._watch(receive, task))
        self.live = True
        try:
            await self._serve(body, dialect)
        except asyncio.CancelledError:
            if not self.gone or task.cancelling() > 1:
                raise
            task.uncancel()
            self.series.failed("client_disconnected")
            self._finished(499)
        finally:
            self.live = False
            watcher.cancel()

    async def _watch(self, receive: Receive, task: "asyncio.Task[Any]") -> None:
        await disconnected(receive)
        # Cancel only while the handler waits inside the work, so the cancellation lands there.
        if self.live:
            self.gone = True
            task.cancel()

    async def refuse(self, exc: CortexError, unread: Receive | None = None) -> None:
        """Answer ``exc`` (nothing has been sent) and count it; ``unread``: the body's."""
        self.live = False
        self.series.failed(exc.code)
        if unread is None:
            await send_error(self.send, self.path, exc)
        else:
            await refuse_unread(self.send, unread, self.path, exc)
        self._finished(exc.status_code)

    async def _serve(self, body: bytes, dialect: Callable[[bytes], Call]) -> None:
        try:
            call = dialect(body)
            model_id = self.ctx.catalogue.resolve(call.model)
        except CortexError as exc:
            await self.refuse(exc)
            return
        self.model = model_id
        forwarded = call.upstream_body(model_id)
        exclude: frozenset[str] = frozenset()
        for final in (False, True):
            try:
                target = await self.ctx.router.route(model_id, exclude)
            except CortexError as exc:
                await self.refuse(exc)
                return
            try:
                await self._forward(target, call, forwarded, model_id, final=final)
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
        self, target: Target, call: Call, body: bytes, model_id: str, *, final: bool
    ) -> None:
        node, options = target.node, self.ctx.config.gateway
        self.node = node.name
        series = self.series
        streaming = call.streaming
        resident = node.resident(model_id)
        resident.active += 1
        series.in_flight.inc()
        try:
            async with self.ctx.upstream.send(
                node.peer,
                target.url + call.path,
                body,
                total=None if streaming else options.request_timeout_s,
                idle=options.idle_timeout_s if streaming else None,
            ) as resp:
                content_type = resp.header("content-type") or "application/json"
                if resp.status >= 400:
                    refusal = await resp.refusal()
                    if not final and isinstance(refusal.error, ModelNotLoadedError):
                        raise refusal.error
                    series.failed(refusal.error.code)
                    await self._answer(call.refusal(refusal))
                elif streaming and content_type.startswith("text/event-stream"):
                    await self._relay(resp, call, series, node.name)
                else:
                    payload = await self._whole(resp, streaming, node.name)
                    answer, usage = call.answer(resp.status, payload, content_type)
                    if usage is not None:
                        series.usage(usage.prompt_tokens, usage.completion_tokens)
                        self.tokens = usage.completion_tokens
                    await self._answer(answer)
        finally:
            resident.active -= 1
            resident.last_active = time.time()
            series.in_flight.dec()
            if resident.active == 0:
                self.ctx.queue.changed()  # it may be evicted now: waiters decide again

    async def _whole(self, resp: UpstreamResponse, streaming: bool, node: str) -> bytes:
        """The neuron's whole answer.

        A stream request answered whole (a neuron that ignored ``stream``) has no total bound
        from the connection, and an idle bound never ends a body that trickles: it gets the
        non-streaming request's bound here.
        """
        if not streaming:
            return await resp.read()
        limit = self.ctx.config.gateway.request_timeout_s
        try:
            async with asyncio.timeout(limit):
                return await resp.read()
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"neuron {node} did not finish its answer in {limit:g} s"
            ) from None

    async def _answer(self, answer: Answer) -> None:
        await self.send(
            {"type": "http.response.start", "status": answer.status, "headers": answer.headers}
        )
        await self._end(answer.status, answer.body)

    async def _end(self, status: int, body: bytes) -> None:
        self.live = False
        await self.send({"type": "http.response.body", "body": body})
        self._finished(status)

    def _finished(self, status: int) -> None:
        seconds = time.perf_counter() - self.started
        self.series.finished(status, seconds)
        self.ctx.recent.request(  # its accounting only: never the prompt
            RequestRecord(
                at=time.time(),
                model=self.model,
                node=self.node,
                dialect=self.dialect,
                status=status,
                seconds=round(seconds, 4),
                ttft_s=self.ttft,
                completion_tokens=self.tokens,
                tokens_per_second=self.tps,
            )
        )

    async def _relay(
        self, resp: UpstreamResponse, call: Call, series: RequestSeries, node: str
    ) -> None:
        await self.send(
            {"type": "http.response.start", "status": resp.status, "headers": _SSE_HEADERS}
        )
        first_token_at = 0.0

        def first_token() -> None:
            nonlocal first_token_at
            first_token_at = time.perf_counter()
            self.ttft = round(first_token_at - self.started, 4)
            series.ttft.observe(first_token_at - self.started)

        relay = call.relay(self.send, first_token)
        try:
            while chunk := await resp.read_chunk():
                await relay.feed(chunk)
            await relay.finish()
            if not relay.done:
                raise UpstreamError(f"neuron {node} ended the stream before {relay.end}")
        except CortexError as exc:
            series.failed(exc.code)
            await relay.fail(exc)
        ended = time.perf_counter()
        usage = relay.usage
        if usage is not None:
            series.usage(usage.prompt_tokens, usage.completion_tokens)
            self.tokens = usage.completion_tokens
            if first_token_at and usage.completion_tokens > 1 and ended > first_token_at:
                rate = (usage.completion_tokens - 1) / (ended - first_token_at)
                series.tokens_per_second.observe(rate)
                self.tps = round(rate, 2)
        await self._end(resp.status, b"")
