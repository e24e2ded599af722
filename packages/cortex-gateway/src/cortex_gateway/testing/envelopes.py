"""The fake neuron's HTTP plumbing: errors as the real neuron sends them, decoded bodies.

Tests and benchmarks only.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from cortex_core import encode
from cortex_core.errors import CortexError, InvalidRequestError, NotFoundError, to_envelope

__all__ = ["Handler", "decode", "envelopes", "error"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(exc: CortexError, status: int | None = None) -> web.Response:
    """The typed envelope of ``exc``, with its status and headers."""
    return web.Response(
        status=status or exc.status_code,
        body=encode(to_envelope(exc)),
        headers=exc.headers,
        content_type="application/json",
    )


def decode(body: bytes, kind: type[Any]) -> Any:
    """``body`` as ``kind``; a bad one is 400 ``invalid_request``."""
    try:
        return msgspec.json.decode(body, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidRequestError(str(exc)) from exc


@web.middleware
async def envelopes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as the real neuron sends it: the typed envelope with its status."""
    try:
        return await handler(request)
    except CortexError as exc:
        return error(exc)
    except web.HTTPNotFound:
        return error(NotFoundError(f"no route {request.path}"))
    except web.HTTPMethodNotAllowed as exc:
        return error(InvalidRequestError(exc.text or "", code="method_not_allowed"), 405)
