"""The last events of an OpenAI server-sent-event stream (DESIGN §6).

A stream that fails after it started cannot change its status: it ends with one error event
(the OpenAI envelope) and ``data: [DONE]``, so that a client's parser reads the error instead
of a silent truncation.
"""

from cortex_core.codec import encode
from cortex_core.errors import CortexError, to_envelope

__all__ = ["DONE", "error_event"]

DONE = b"data: [DONE]\n\n"
"""The event that ends every OpenAI stream."""


def error_event(exc: CortexError) -> bytes:
    """The events that end a failed stream: ``exc``'s envelope, then ``data: [DONE]``."""
    return b"data: " + encode(to_envelope(exc)) + b"\n\n" + DONE
