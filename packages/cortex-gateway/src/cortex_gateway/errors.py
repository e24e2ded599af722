"""Errors as HTTP answers: the OpenAI envelope with the status of DESIGN §6.

The Starlette handlers are registered once by :func:`~cortex_gateway.app.create_app`; raw ASGI
code (the proxy, the auth middleware) sends the same answers with :func:`send_error`. A Python
traceback never reaches a client: the 500 handler logs it and answers with the request id.
"""

import asyncio
import contextlib
import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Send

from cortex_core import encode, to_envelope
from cortex_core.errors import CortexError, EngineError, NotFoundError
from cortex_core.logging import request_id

__all__ = ["EXCEPTION_HANDLERS", "error_body", "refuse_unread", "send_error"]

logger = logging.getLogger(__name__)


class _MethodNotAllowedError(CortexError):
    status_code = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


def error_body(exc: CortexError) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The envelope's bytes and the answer's headers for ``exc``."""
    body = encode(to_envelope(exc))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    return body, headers


async def send_error(
    send: Send, exc: CortexError, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer ``exc`` on a raw ASGI ``send`` (nothing may have been sent yet)."""
    body, headers = error_body(exc)
    await send(
        {
            "type": "http.response.start",
            "status": exc.status_code,
            "headers": headers + (extra or []),
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _discard(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def refuse_unread(
    send: Send, receive: Receive, exc: CortexError, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer ``exc`` before the body was read, discarding what of it still arrives.

    Hypercorn queues body chunks for the app until it reads them; an app that answers and
    stops reading leaves a large upload stuck in that queue, and the connection with it.
    The server closes the connection after this answer; the body is dropped, never kept.
    """
    discard = asyncio.create_task(_discard(receive))
    try:
        await send_error(send, exc, extra)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(discard, 1.0)
    finally:
        discard.cancel()


def _response(exc: CortexError) -> Response:
    body, headers = error_body(exc)
    response = Response(body, status_code=exc.status_code)
    response.raw_headers = headers
    return response


async def _cortex_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CortexError)
    return _response(exc)


async def _http_exception(request: Request, exc: Exception) -> Response:
    # Routing raises only these two.
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if exc.status_code == 405:
        return _response(_MethodNotAllowedError(f"{request.method} is not allowed on {path}"))
    return _response(NotFoundError(f"No route {path}"))


async def _unexpected(request: Request, exc: Exception) -> Response:
    rid = request_id.get()
    logger.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
    return _response(
        EngineError(f"Internal error; the gateway's log has it under request id {rid}")
    )


EXCEPTION_HANDLERS = {
    CortexError: _cortex_error,
    HTTPException: _http_exception,
    Exception: _unexpected,
}
"""``create_app``'s ``exception_handlers``."""
