"""Pure ASGI middleware: request ids, the access log and the error boundary; the bearer token.

Never ``BaseHTTPMiddleware``: it breaks ``ContextVar`` propagation and streaming.
"""

import hmac
import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cortex_core import codec
from cortex_core.errors import AuthenticationError, EngineError, to_envelope
from cortex_core.logging import client_request_id, request_id

__all__ = ["AuthMiddleware", "RequestLogMiddleware"]

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("cortex_neuron.access")

_OPEN_PATHS = frozenset({"/health"})


class RequestLogMiddleware:
    """Request ids, the access log, and the last word on unexpected errors.

    Each request gets an id (the client's ``x-request-id`` or a new one), which is sent back,
    set for the logs, and logged with one access line when the response ends. An exception no
    handler translated becomes a 500 envelope naming the request id; the traceback goes to the
    log only.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request with its id set."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = client_request_id(scope["headers"]) or uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.monotonic()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unexpected error")
            if status:  # the response has started: all that can be done is to end it
                raise
            error = EngineError(f"internal error; the logs have it under request id {rid}")
            status = error.status_code
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": codec.encode(to_envelope(error))})
        finally:
            access_logger.info(
                "%s %s %d %.3fs", scope["method"], scope["path"], status, time.monotonic() - started
            )
            request_id.reset(token)


class AuthMiddleware:
    """Requires ``Authorization: Bearer <auth_token>`` on every route but ``/health``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request if its token is right, else answer 401."""
        if scope["type"] != "http" or scope["path"] in _OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"authorization").encode()
        if hmac.compare_digest(given, self._expected):
            await self.app(scope, receive, send)
            return
        error = AuthenticationError("a valid `Authorization: Bearer <token>` header is required")
        await send(
            {
                "type": "http.response.start",
                "status": error.status_code,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": codec.encode(to_envelope(error))})


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""
