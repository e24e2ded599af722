"""Server parts both daemons use, as pure ASGI: no Starlette, no framework.

- :mod:`~cortex_core.asgi.middleware`: the request id, the access log and the 500 boundary;
- :mod:`~cortex_core.asgi.answers`: answering an error on a raw ``send``, read or unread body;
- :mod:`~cortex_core.asgi.credentials`: the key a request presents, compared in constant time;
- :mod:`~cortex_core.asgi.sse`: the OpenAI stream's last events (``[DONE]``, the error event);
- :mod:`~cortex_core.asgi.serving`: binding a listener and serving an app with Hypercorn (the
  ``server`` extra).

Nothing here knows a route: what a path means is each daemon's business.
"""

from cortex_core.asgi.answers import (
    ErrorRenderer,
    disconnected,
    openai_error,
    refuse_unread,
    send_error,
)
from cortex_core.asgi.credentials import key_among, presented_key
from cortex_core.asgi.middleware import RequestContextMiddleware
from cortex_core.asgi.sse import DONE, error_event, responses_error_event

__all__ = [
    "DONE",
    "ErrorRenderer",
    "RequestContextMiddleware",
    "disconnected",
    "error_event",
    "key_among",
    "openai_error",
    "presented_key",
    "refuse_unread",
    "responses_error_event",
    "send_error",
]
