"""The few OpenAI inference fields that the gateway and the neuron read.

Request bodies travel as bytes and are never re-encoded: these structs decode only what routing
and accounting need (msgspec skips every other field cheaply), so unknown OpenAI fields survive
the hop untouched.
"""

import msgspec

__all__ = ["InferenceRequest", "StreamOptions", "Usage", "UsageReport"]


class StreamOptions(msgspec.Struct, kw_only=True, frozen=True):
    """``stream_options`` of a streaming request."""

    include_usage: bool | None = None


class InferenceRequest(msgspec.Struct, kw_only=True, frozen=True):
    """The routing view of ``/v1/chat/completions`` and ``/v1/completions`` bodies."""

    model: str
    stream: bool | None = False
    stream_options: StreamOptions | None = None

    @property
    def streaming(self) -> bool:
        """Whether the client asked for an SSE stream (``null`` means no)."""
        return bool(self.stream)

    @property
    def wants_usage(self) -> bool:
        """Whether a streaming client asked for the usage-only chunk itself."""
        return self.stream_options is not None and bool(self.stream_options.include_usage)


class Usage(msgspec.Struct, kw_only=True, frozen=True):
    """Token counts as the engine reports them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class UsageReport(msgspec.Struct, kw_only=True, frozen=True):
    """The ``usage`` of a response body or of a stream's usage-only chunk, nothing else."""

    usage: Usage | None = None
