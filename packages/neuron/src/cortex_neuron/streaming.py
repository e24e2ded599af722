"""Answering from an engine: SSE streams and whole responses, tied to the request's lifetime.

- A stream sends an SSE comment (``: keep-alive``) every second until the engine's first event
  (a long prefill), so that clients and proxies do not give up; after that, events pass
  straight through.
- A client that goes away cancels the engine call, streaming or not: the engine aborts the
  request.
- A request that is aborted (forced unload, dead engine, shutdown) or fails after its stream
  started ends with an error event and ``data: [DONE]``; never a silent truncation.
- The request's admission ticket is released when its response has ended, however it ends.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from cortex_core import codec
from cortex_core.errors import CortexError, EngineError, to_envelope
from cortex_neuron.admission import Ticket

__all__ = ["ClientGoneError", "EventStream", "until_done"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class ClientGoneError(Exception):
    """The client disconnected before its answer was ready."""


def error_event(exc: CortexError) -> bytes:
    """The SSE event that ends a failed stream (followed by ``data: [DONE]``)."""
    return b"data: " + codec.encode(to_envelope(exc)) + b"\n\n"


async def until_done(request: Request, call: Awaitable[T], ticket: Ticket) -> T:
    """Await ``call``; cancel it if the client goes away or the ticket is aborted.

    Raises:
        ClientGoneError: the client disconnected.
        CortexError: the ticket was aborted (its error), or the call failed.
    """
    work = asyncio.ensure_future(call)
    gone = asyncio.ensure_future(_disconnected(request.receive))
    aborted = asyncio.ensure_future(ticket.aborted.wait())
    try:
        await asyncio.wait((work, gone, aborted), return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            return work.result()
        if aborted.done():
            assert ticket.abort_error is not None
            raise ticket.abort_error
        raise ClientGoneError
    finally:
        for task in (work, gone, aborted):
            task.cancel()
        await asyncio.gather(work, gone, aborted, return_exceptions=True)


class EventStream:
    """The ASGI response for an engine's SSE stream."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        ticket: Ticket,
        on_end: Callable[[], None],
        keepalive_s: float = 1.0,
    ) -> None:
        self._chunks = chunks
        self._ticket = ticket
        self._on_end = on_end
        self._keepalive_s = keepalive_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the stream until it ends, the client goes away or the request is aborted."""
        pump = asyncio.ensure_future(self._pump(send))
        gone = asyncio.ensure_future(_disconnected(receive))
        aborted = asyncio.ensure_future(self._ticket.aborted.wait())
        try:
            await asyncio.wait((pump, gone, aborted), return_when=asyncio.FIRST_COMPLETED)
            if pump.done():
                pump.result()
            elif aborted.done():
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
                assert self._ticket.abort_error is not None
                await _end(send, self._ticket.abort_error)
            else:
                logger.info("client went away; request aborted")
        finally:
            for task in (pump, gone, aborted):
                task.cancel()
            await asyncio.gather(pump, gone, aborted, return_exceptions=True)
            await _close(self._chunks)
            self._ticket.release()
            self._on_end()

    async def _pump(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        try:
            async with contextlib.aclosing(self._events()) as events:
                async for event in events:
                    await send({"type": "http.response.body", "body": event, "more_body": True})
        except CortexError as exc:
            await _end(send, exc)
            return
        except Exception as exc:  # any failure must reach the client as an event
            logger.exception("the engine failed mid-stream")
            await _end(send, EngineError(f"the engine failed: {type(exc).__name__}"))
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _events(self) -> AsyncGenerator[bytes, None]:
        # Until the first event (the prefill) a comment keeps the line alive every second; after
        # it, events pass straight through: nothing per event but the send.
        chunks = aiter(self._chunks)
        first = asyncio.ensure_future(anext(chunks))
        try:
            while not (await asyncio.wait((first,), timeout=self._keepalive_s))[0]:
                yield KEEPALIVE
        finally:
            if not first.done():
                first.cancel()
                await asyncio.gather(first, return_exceptions=True)
        try:
            yield first.result()
        except StopAsyncIteration:
            return
        async for chunk in chunks:
            yield chunk


async def _end(send: Send, exc: CortexError) -> None:
    """End a started stream with ``exc`` as an error event, then ``data: [DONE]``."""
    await send({"type": "http.response.body", "body": error_event(exc) + DONE, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _close(chunks: Any) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()
