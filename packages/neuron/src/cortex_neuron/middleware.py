"""The neuron's bearer token: every route but ``/health`` needs ``auth_token`` (DESIGN §4).

Pure ASGI, inside the shared request middleware (:mod:`cortex_core.asgi.middleware`), so a
refusal still carries its request id. The token is compared in constant time, never logged.
"""

from starlette.types import ASGIApp, Receive, Scope, Send

from cortex_core.asgi import key_among, openai_error, presented_key, refuse_unread
from cortex_core.errors import AuthenticationError

__all__ = ["AuthMiddleware"]

_OPEN_PATHS = frozenset({"/health"})
_CHALLENGE = [(b"www-authenticate", b"Bearer")]


class AuthMiddleware:
    """Requires ``Authorization: Bearer <auth_token>`` on every route but ``/health``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._tokens = (token.encode(),)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request if its token is right, else answer 401."""
        if scope["type"] != "http" or scope["path"] in _OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = presented_key(scope["headers"], x_api_key=False)
        if given is not None and key_among(given, self._tokens):
            await self.app(scope, receive, send)
            return
        error = AuthenticationError("a valid `Authorization: Bearer <token>` header is required")
        await refuse_unread(send, receive, error, openai_error(scope["path"], error), _CHALLENGE)
