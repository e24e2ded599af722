"""The outermost middleware of both daemons: the request id, the access log, the 500 boundary.

Pure ASGI (never Starlette's ``BaseHTTPMiddleware``), so the request-id ``ContextVar`` reaches
the handlers and streams pass through untouched. Each request gets an id (the client's valid
``x-request-id``, else a new one) that is echoed back and set for every log record of the
request. When its answer ends, one access line is logged: method, path, status (``-`` when
nothing was sent) and milliseconds, never a body or a key. An exception no handler translated
becomes a 500 in the route's dialect naming the request id; its traceback goes to the log only.

The access line is on every request's path, so it is made cheaply: formatted once, handed to
the logger's handlers as a finished record, with no caller lookup.
"""

import logging
import os
import time

from cortex_core.asgi.answers import ErrorRenderer, openai_error, send_error
from cortex_core.asgi.spec import ASGIApp, Message, Receive, Scope, Send
from cortex_core.errors import EngineError
from cortex_core.logging import client_request_id, request_id

__all__ = ["RequestContextMiddleware"]

logger = logging.getLogger(__name__)


class RequestContextMiddleware:
    """Request ids, the access log (logger ``access_logger``) and the last word on errors.

    Args:
        app: The app to serve.
        daemon: Whose log a 500 points to (``gateway``, ``neuron``).
        access_logger: The access log's logger name (``cortex_gateway.access``).
        render_error: The 500's body for a path, in that path's dialect.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        daemon: str,
        access_logger: str,
        render_error: ErrorRenderer = openai_error,
    ) -> None:
        self.app = app
        self._daemon = daemon
        self._access = logging.getLogger(access_logger)
        self._render_error = render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request with its id set."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = client_request_id(scope["headers"]) or os.urandom(16).hex()
        token = request_id.set(rid)
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
        except Exception:
            logger.exception("unexpected error answering %s %s", scope["method"], scope["path"])
            if status:  # the answer has started: all the server can do is end it
                raise
            error = EngineError(
                f"Internal error; the {self._daemon}'s log has it under request id {rid}"
            )
            await send_error(send_with_id, error, self._render_error(scope["path"], error))
        finally:
            access = self._access
            if access.isEnabledFor(logging.INFO):
                ms = (time.perf_counter() - started) * 1000
                line = f"{scope['method']} {scope['path']} {status or '-'} {ms:.1f} ms"
                access.handle(access.makeRecord(access.name, logging.INFO, "", 0, line, (), None))
            request_id.reset(token)
