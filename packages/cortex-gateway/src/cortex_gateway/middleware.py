"""Pure ASGI middleware for every request: the request id and the access log.

Pure ASGI (never ``BaseHTTPMiddleware``) so that the request-id ``ContextVar`` reaches the
handlers and streams pass through untouched. The access log is the ``cortex_gateway.access``
logger: method, path, status and time, never a body or a key.
"""

import logging
import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cortex_core.logging import client_request_id, request_id

__all__ = ["RequestContextMiddleware"]

access_logger = logging.getLogger("cortex_gateway.access")


class RequestContextMiddleware:
    """Sets the request id (the client's or a new one), echoes it, and logs each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request with its id set."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = client_request_id(scope["headers"]) or os.urandom(16).hex()
        # Not reset afterwards: each request runs in its own task (and context), and the 500
        # handler, outside this middleware, still needs it.
        request_id.set(rid)
        echo = (b"x-request-id", rid.encode("ascii"))
        status = 0
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echo]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if access_logger.isEnabledFor(logging.INFO):
                access_logger.info(
                    "%s %s %s %.1f ms",
                    scope["method"],
                    scope["path"],
                    status or "-",
                    (time.perf_counter() - started) * 1000,
                )
