"""Anthropic's error envelope and types for the gateway's errors (DESIGN §6).

``{"type": "error", "error": {"type", "message"}}``. The type follows the error's HTTP status;
a prompt over the model's context reads "prompt is too long: N tokens > M maximum", the words
Claude Code reacts to (it compacts the conversation). The gateway's 507 ``out_of_memory`` (no
room for the model now) is Anthropic's 529 ``overloaded_error`` on these routes, the status its
clients know to retry; every other status is kept.
"""

import re

import msgspec

from cortex_core import encode
from cortex_core.errors import ContextLengthExceededError, CortexError, OutOfMemoryError

__all__ = ["OverloadedError", "error_envelope", "error_type", "for_anthropic"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
_MAXIMUM = re.compile(r"maximum context length is (\d+)")
_PROMPT = re.compile(r"(?:contains|has|requested) (\d+)")


class OverloadedError(CortexError):
    """Anthropic's 529: no capacity for the model now (the gateway's 507 on these routes)."""

    status_code = 529
    error_type = "overloaded_error"
    default_code = "out_of_memory"


class _Detail(msgspec.Struct, kw_only=True):
    type: str
    message: str


class ErrorEvent(msgspec.Struct, kw_only=True, tag="error", tag_field="type"):
    """The body of an error answer, and the data of a stream's ``error`` event."""

    error: _Detail


def for_anthropic(exc: CortexError) -> CortexError:
    """``exc`` as an Anthropic route answers it (only the status of a 507 changes)."""
    if isinstance(exc, OutOfMemoryError):
        return OverloadedError(exc.message, retry_after=exc.retry_after)
    return exc


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    return _TYPES.get(status, "api_error")


def _message(exc: CortexError) -> str:
    if not isinstance(exc, ContextLengthExceededError) and exc.code != "context_length_exceeded":
        return exc.message
    maximum, prompt = _MAXIMUM.search(exc.message), _PROMPT.search(exc.message)
    if maximum is None or prompt is None:
        return f"prompt is too long: {exc.message}"
    return f"prompt is too long: {prompt[1]} tokens > {maximum[1]} maximum"


def error_envelope(exc: CortexError, status: int | None = None) -> bytes:
    """The Anthropic envelope of ``exc`` (``status``: the one it is answered with)."""
    detail = _Detail(type=error_type(status or exc.status_code), message=_message(exc))
    return encode(ErrorEvent(error=detail))
