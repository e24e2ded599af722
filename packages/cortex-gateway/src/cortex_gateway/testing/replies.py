"""The OpenAI JSON of the fake neuron's answers: chunks of a stream, or a whole answer.

Each answer is ``tok0 tok1 …``, one word per token, with ``usage`` counting
:data:`PROMPT_TOKENS` prompt tokens. Tests and benchmarks only.
"""

import json
from typing import Any

from cortex_core import encode
from cortex_core.errors import CortexError, to_envelope
from cortex_core.wire.control import TokenizeRequest

__all__ = [
    "DONE",
    "KEEPALIVE",
    "PROMPT_TOKENS",
    "answer",
    "chunk",
    "error_event",
    "event",
    "token_count",
]

PROMPT_TOKENS = 7
"""The prompt size every fake answer reports in its usage."""

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


def error_event(exc: CortexError) -> bytes:
    """The event that ends a failed stream, as the real neuron sends it (then ``[DONE]``)."""
    return event(to_envelope(exc))


def event(obj: Any) -> bytes:
    """One SSE ``data:`` event."""
    return b"data: " + encode(obj) + b"\n\n"


def chunk(
    chat: bool, model: str, text: str | None, *, role: bool = False, finish: bool = False
) -> dict[str, Any]:
    """One chunk of a stream: the role, a word, or the finish."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop" if finish else None}
    if chat:
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
        if text is not None:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text or ""
    kind = "chat.completion.chunk" if chat else "text_completion"
    return {"id": "fake-1", "object": kind, "created": 0, "model": model, "choices": [choice]}


def answer(path: str, model: str, tokens: int) -> dict[str, Any]:
    """A whole answer of ``tokens`` words, with usage."""
    text = "".join(f"tok{i} " for i in range(tokens))
    usage = {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": tokens,
        "total_tokens": PROMPT_TOKENS + tokens,
    }
    if path.endswith("/chat/completions"):
        message = {"role": "assistant", "content": text}
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": "stop"}
        kind = "chat.completion"
    else:
        choice, kind = {"index": 0, "text": text, "finish_reason": "stop"}, "text_completion"
    return {
        "id": "fake-1",
        "object": kind,
        "created": 0,
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


def token_count(body: TokenizeRequest) -> int:
    """Words, plus four per message (and the tools' JSON over four), as the fake engine's."""
    if body.messages is not None:
        count = sum(_words(m.get("content")) + 4 for m in body.messages)
        return count + (len(json.dumps(body.tools)) // 4 if body.tools else 0)
    return _words(body.prompt)


def _words(content: Any) -> int:
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        return sum(_words(p.get("text")) for p in content if isinstance(p, dict))
    return 0
