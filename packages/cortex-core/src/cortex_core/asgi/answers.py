"""Answering an error on a raw ASGI ``send``, and noticing that a client went away.

The body of an error answer is in the caller's dialect (:data:`ErrorRenderer`): the neuron and
the gateway's OpenAI routes answer :func:`openai_error`; the gateway picks another for its other
dialects. The headers are the same for every dialect: JSON, the length, and the error's own
(``Retry-After``).
"""

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from cortex_core.asgi.spec import Receive, Send
from cortex_core.codec import encode
from cortex_core.errors import CortexError, to_envelope

__all__ = ["ErrorRenderer", "disconnected", "openai_error", "refuse_unread", "send_error"]

Headers = Sequence[tuple[bytes, bytes]]

ErrorRenderer = Callable[[str, CortexError], bytes]
"""The body answering an error on a path, in that path's dialect."""

UNREAD_BODY_WAIT_S = 1.0
"""How long :func:`refuse_unread` goes on discarding a body the client is still sending."""


def openai_error(path: str, exc: CortexError) -> bytes:
    """The OpenAI envelope of ``exc`` (DESIGN §6), whatever the path."""
    return encode(to_envelope(exc))


async def send_error(send: Send, exc: CortexError, body: bytes, extra: Headers = ()) -> None:
    """Answer ``exc`` with ``body`` (nothing may have been sent yet)."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        *((k.lower().encode(), v.encode()) for k, v in exc.headers.items()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def disconnected(receive: Receive) -> None:
    """Return once the client has gone away (whatever of the body still arrives is dropped)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def refuse_unread(
    send: Send, receive: Receive, exc: CortexError, body: bytes, extra: Headers = ()
) -> None:
    """Answer ``exc`` before the request's body was read, discarding what of it still arrives.

    Hypercorn queues body chunks for the app until it reads them; an app that answers and
    stops reading leaves a large upload stuck in that queue, and the connection with it. The
    server closes the connection after this answer; the body is dropped, never kept.
    """
    discard = asyncio.create_task(disconnected(receive))
    try:
        await send_error(send, exc, body, extra)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(discard, UNREAD_BODY_WAIT_S)
    finally:
        discard.cancel()
