"""Errors as HTTP answers, in the route's dialect (DESIGN §6), auth and unknown routes included.

:func:`error_body` is the one place that says which envelope a path speaks: Anthropic's on
``/v1/messages`` and below (:mod:`cortex_gateway.inference.anthropic.errors`, where a 507 is
answered as Anthropic's 529), OpenAI's everywhere else. The Starlette handlers are registered
once by :func:`~cortex_gateway.app.create_app`; raw ASGI code (the exchange, the auth
middleware) answers with :func:`send_error` and :func:`refuse_unread`. A Python traceback never
reaches a client: the request middleware logs it and answers a 500 naming the request id.
"""

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Send

from cortex_core import asgi
from cortex_core.errors import CortexError, NotFoundError
from cortex_gateway.inference.anthropic import errors as anthropic

__all__ = ["EXCEPTION_HANDLERS", "error_body", "refuse_unread", "send_error"]

Headers = list[tuple[bytes, bytes]]


class _MethodNotAllowedError(CortexError):
    status_code = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


def _anthropic(path: str) -> bool:
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def _for_path(path: str, exc: CortexError) -> CortexError:
    """``exc`` as ``path`` answers it: its status may differ in another dialect."""
    return anthropic.for_anthropic(exc) if _anthropic(path) else exc


def error_body(path: str, exc: CortexError) -> bytes:
    """The body answering ``exc`` on ``path``, in that path's dialect."""
    if _anthropic(path):
        return anthropic.error_envelope(anthropic.for_anthropic(exc))
    return asgi.openai_error(path, exc)


async def send_error(send: Send, path: str, exc: CortexError, extra: Headers | None = None) -> None:
    """Answer ``exc`` on a raw ASGI ``send`` (nothing may have been sent yet)."""
    await asgi.send_error(send, _for_path(path, exc), error_body(path, exc), extra or ())


async def refuse_unread(
    send: Send, receive: Receive, path: str, exc: CortexError, extra: Headers | None = None
) -> None:
    """Answer ``exc`` before the body was read (see :func:`cortex_core.asgi.refuse_unread`)."""
    answered = _for_path(path, exc)
    await asgi.refuse_unread(send, receive, answered, error_body(path, exc), extra or ())


def _response(path: str, exc: CortexError) -> Response:
    response = Response(error_body(path, exc), status_code=_for_path(path, exc).status_code)
    response.raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(response.body)),
        *((k.lower().encode(), v.encode()) for k, v in exc.headers.items()),
    ]
    return response


async def _cortex_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CortexError)
    return _response(request.url.path, exc)


async def _http_exception(request: Request, exc: Exception) -> Response:
    # Routing raises only these two.
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if exc.status_code == 405:
        error: CortexError = _MethodNotAllowedError(f"{request.method} is not allowed on {path}")
    else:
        error = NotFoundError(f"No route {path}")
    return _response(path, error)


EXCEPTION_HANDLERS = {CortexError: _cortex_error, HTTPException: _http_exception}
"""``create_app``'s ``exception_handlers``."""
