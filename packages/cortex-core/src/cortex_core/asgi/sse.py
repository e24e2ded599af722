"""The last events of an OpenAI server-sent-event stream (DESIGN §6).

A stream that fails after it started cannot change its status: it ends with one error event
(the OpenAI envelope) and ``data: [DONE]``, so that a client's parser reads the error instead
of a silent truncation. A Responses stream (``/v1/responses``) has no ``[DONE]``: it ends with
a typed ``error`` event instead, numbered after the last event sent.
"""

from cortex_core.codec import encode
from cortex_core.errors import CortexError, to_envelope

__all__ = ["DONE", "error_event", "responses_error_event"]

DONE = b"data: [DONE]\n\n"
"""The event that ends every OpenAI stream."""


def error_event(exc: CortexError) -> bytes:
    """The events that end a failed stream: ``exc``'s envelope, then ``data: [DONE]``."""
    return b"data: " + encode(to_envelope(exc)) + b"\n\n" + DONE


def responses_error_event(exc: CortexError, sequence_number: int) -> bytes:
    """The event that ends a failed Responses stream: OpenAI's ``error`` event for ``exc``."""
    body = {
        "type": "error",
        "code": exc.code,
        "message": exc.message,
        "param": exc.param,
        "sequence_number": sequence_number,
    }
    return b"event: error\ndata: " + encode(body) + b"\n\n"
