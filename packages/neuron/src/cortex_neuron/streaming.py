"""Answering from an engine: SSE streams and whole responses, tied to the request's lifetime.

- A stream sends an SSE comment (``: keep-alive``) every second until the engine's first event
  (a long prefill), so that clients and proxies do not give up; after that, events pass
  straight through.
- A client that goes away cancels the engine call, streaming or not: the engine aborts the
  request.
- A request that is aborted (forced unload, dead engine, shutdown) or fails after its stream
  started ends with an error event (chat's: the envelope and ``data: [DONE]``; a route may
  give its own, as Responses does); never a silent truncation.
- The request's admission ticket is released when its response has ended, however it ends,
  and how it ended is reported: the status it would have had (200, 499 for a client that went
  away, the error's status).
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from cortex_core.asgi import disconnected, error_event
from cortex_core.errors import CortexError, EngineError
from cortex_neuron.admission import Ticket

__all__ = ["CLIENT_GONE", "ClientGoneError", "EventStream", "until_done"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

KEEPALIVE = b": keep-alive\n\n"
CLIENT_GONE = 499
"""The status a request is counted with when its client went away (nginx's)."""
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class ClientGoneError(Exception):
    """The client disconnected before its answer was ready."""


async def until_done(request: Request, call: Awaitable[T], ticket: Ticket) -> T:
    """Await ``call``; cancel it if the client goes away or the ticket is aborted.

    Raises:
        ClientGoneError: the client disconnected.
        CortexError: the ticket was aborted (its error), or the call failed.
    """
    work = asyncio.ensure_future(call)
    gone = asyncio.ensure_future(disconnected(request.receive))
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
    """The ASGI response for an engine's SSE stream; ``on_end`` gets the status it ended with."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        ticket: Ticket,
        on_end: Callable[[int], None],
        keepalive_s: float = 1.0,
        ending: Callable[[CortexError], bytes] = error_event,
    ) -> None:
        self._chunks = chunks
        self._ending = ending
        self._ticket = ticket
        self._on_end = on_end
        self._keepalive_s = keepalive_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the stream until it ends, the client goes away or the request is aborted."""
        pump = asyncio.ensure_future(self._pump(send))
        gone = asyncio.ensure_future(disconnected(receive))
        aborted = asyncio.ensure_future(self._ticket.aborted.wait())
        status = CLIENT_GONE  # unless it ends otherwise (a cancelled response is a gone client)
        try:
            await asyncio.wait((pump, gone, aborted), return_when=asyncio.FIRST_COMPLETED)
            if pump.done():
                status = pump.result()
            elif aborted.done():
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
                assert self._ticket.abort_error is not None
                status = self._ticket.abort_error.status_code
                await self._end(send, self._ticket.abort_error)
            else:
                logger.info("client went away; request aborted")
        finally:
            for task in (pump, gone, aborted):
                task.cancel()
            await asyncio.gather(pump, gone, aborted, return_exceptions=True)
            await _close(self._chunks)
            self._ticket.release()
            self._on_end(status)

    async def _pump(self, send: Send) -> int:
        """Send the stream; returns the status it ended with (200, or its error's)."""
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        try:
            async with contextlib.aclosing(self._events()) as events:
                async for event in events:
                    await send({"type": "http.response.body", "body": event, "more_body": True})
        except CortexError as exc:
            await self._end(send, exc)
            return exc.status_code
        except Exception as exc:  # any failure must reach the client as an event
            logger.exception("the engine failed mid-stream")
            error = EngineError(f"the engine failed: {type(exc).__name__}")
            await self._end(send, error)
            return error.status_code
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return 200

    async def _end(self, send: Send, exc: CortexError) -> None:
        """End a started stream with ``exc`` as the route's error event."""
        await send({"type": "http.response.body", "body": self._ending(exc), "more_body": True})
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


async def _close(chunks: Any) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()
