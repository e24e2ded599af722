"""Who may call what: DESIGN §4's auth matrix, as a pure ASGI middleware.

``/`` and ``/health`` are open, and so is the status page's shell (``/ui`` and its static
files under ``/ui/static/``: they hold no data). ``/v1/*``, ``/fleet``, ``/ui/state`` (and
unknown paths) need a client or an
admin key once client keys exist. ``/admin/*`` is open while no key exists at all, needs an
admin key once any key exists, and is closed (403) when only client keys exist. A key comes as
``Authorization: Bearer <key>`` or ``x-api-key: <key>``; keys are compared in constant time and
never logged. A refusal speaks the route's dialect. The metrics listener is another app and is
not behind this.
"""

from starlette.types import ASGIApp, Receive, Scope, Send

from cortex_core.asgi import key_among, presented_key
from cortex_core.config import AuthOptions
from cortex_core.errors import AuthenticationError, CortexError, PermissionDeniedError
from cortex_gateway.errors import refuse_unread

__all__ = ["AuthMiddleware", "Keys"]

_OPEN = frozenset({"/", "/health", "/ui", "/ui/"})  # /ui/ redirects to /ui
_OPEN_PREFIX = "/ui/static/"
_CHALLENGE = [(b"www-authenticate", b"Bearer")]


class Keys:
    """The configured client and admin keys, and the matrix over them."""

    def __init__(self, auth: AuthOptions) -> None:
        self._client = tuple(k.encode() for k in auth.api_keys)
        self._admin = tuple(k.encode() for k in auth.admin_keys)

    def check(self, path: str, headers: list[tuple[bytes, bytes]]) -> CortexError | None:
        """The error refusing this request, or ``None`` when it may go on."""
        if path in _OPEN or path.startswith(_OPEN_PREFIX):
            return None
        admin_route = path.startswith("/admin/")
        if admin_route and not self._client and not self._admin:
            return None
        if admin_route and not self._admin:
            return PermissionDeniedError("Admin routes are closed: no admin_keys are configured")
        if not admin_route and not self._client:
            return None
        key = presented_key(headers, x_api_key=True)
        if key is None:
            return AuthenticationError(
                "No API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`"
            )
        if key_among(key, self._admin):
            return None
        if key_among(key, self._client):
            return PermissionDeniedError("This route needs an admin key") if admin_route else None
        return AuthenticationError("Invalid API key")

    def admits_admin(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether this request could call ``/admin/*`` (what the status page offers)."""
        if not self._admin:
            return not self._client
        key = presented_key(headers, x_api_key=True)
        return key is not None and key_among(key, self._admin)

    @property
    def required(self) -> bool:
        """Whether any key is configured (the status page then asks for one)."""
        return bool(self._client or self._admin)


class AuthMiddleware:
    """Refuses requests that :meth:`Keys.check` refuses, before any handler runs."""

    def __init__(self, app: ASGIApp, keys: Keys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, then pass it on or refuse it."""
        if scope["type"] == "http":
            error = self.keys.check(scope["path"], scope["headers"])
            if error is not None:
                extra = _CHALLENGE if isinstance(error, AuthenticationError) else None
                await refuse_unread(send, receive, scope["path"], error, extra)
                return
        await self.app(scope, receive, send)
