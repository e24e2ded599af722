"""The status page's routes: ``GET /ui`` (the shell), ``/ui/static/{name}``, ``/ui/state``.

The shell and its script and style sheet are files shipped in the wheel beside this module
(``static/``); they hold no data, so they load without a key. The script reads ``/ui/state``
(a client or an admin key, as ``/fleet``) every second: the fleet as ``/fleet`` shows it, the
requests waiting per model, the recent requests and lifecycle events, newest first, and whether
the key presented may use ``/admin/*`` (the page then shows its buttons, which call the
existing admin routes).
"""

import functools
import time
from importlib import resources

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from cortex_core import encode
from cortex_core.errors import NotFoundError
from cortex_gateway.context import context
from cortex_gateway.fleet.views import FleetView, fleet_view
from cortex_gateway.web.recent import LifecycleEvent, RequestRecord

__all__ = ["STATIC", "UIState", "ui", "ui_state", "ui_static"]

STATIC = {
    "ui.js": "text/javascript; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
"""The files under ``/ui/static/``, with their media types; no other name is served."""

_NO_STORE = {"cache-control": "no-store"}
_SHELL = {
    **_NO_STORE,
    # Its own files only: no inline script, nothing from elsewhere, not framed.
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
}


class UIState(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /ui/state``: what the page draws."""

    now: float
    auth: bool
    """Whether the gateway has keys (the page then asks for one)."""
    admin: bool
    """Whether the key presented may call ``/admin/*``."""
    fleet: FleetView
    queued: dict[str, int]
    """Requests waiting in the gateway's queue, per model."""
    requests: list[RequestRecord]
    events: list[LifecycleEvent]


@functools.cache
def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


async def ui(request: Request) -> Response:
    """``GET /ui``: the page's shell (no data; open)."""
    return Response(_asset("ui.html"), media_type="text/html; charset=utf-8", headers=_SHELL)


async def ui_static(request: Request) -> Response:
    """``GET /ui/static/{name}``: the page's script, style sheet and icon."""
    name = request.path_params["name"]
    if name not in STATIC:
        raise NotFoundError(f"No route {request.url.path}")
    return Response(_asset(name), media_type=STATIC[name], headers=_NO_STORE)


async def ui_state(request: Request) -> Response:
    """``GET /ui/state``: the fleet, the queue, recent requests and events, the key's role."""
    ctx = context(request.scope)
    state = UIState(
        now=time.time(),
        auth=ctx.keys.required,
        admin=ctx.keys.admits_admin(request.scope["headers"]),
        fleet=fleet_view(ctx.nodes, ctx.catalogue),
        queued=ctx.queue.waiting(),
        requests=list(reversed(ctx.recent.requests)),
        events=list(reversed(ctx.recent.events)),
    )
    return Response(encode(state), media_type="application/json", headers=_NO_STORE)
