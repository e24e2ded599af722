"""The key a request presents, and comparing it with the configured ones in constant time.

Both daemons accept ``Authorization: Bearer <key>`` (the scheme in any case, RFC 7235); the
gateway also takes ``x-api-key: <key>``, the Anthropic SDK's header. Keys are bytes and are
never logged.
"""

import hmac
from collections.abc import Iterable

__all__ = ["key_among", "presented_key"]


def presented_key(headers: Iterable[tuple[bytes, bytes]], *, x_api_key: bool) -> bytes | None:
    """The key in ``Authorization: Bearer`` (or, with ``x_api_key``, ``x-api-key``), if any."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
        elif x_api_key and name == b"x-api-key" and value:
            return value
    return None


def key_among(key: bytes, keys: Iterable[bytes]) -> bool:
    """Whether ``key`` is one of ``keys``, every one compared (no early exit)."""
    found = False
    for candidate in keys:
        found |= hmac.compare_digest(key, candidate)
    return found
