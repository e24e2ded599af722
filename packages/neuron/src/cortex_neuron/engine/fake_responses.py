"""The fake engine's OpenAI Responses answers: a whole ``response`` or its typed SSE events.

Shaped as OpenAI's (and vLLM's) are, closely enough for the ``openai`` SDK: a stream is
``response.created``, ``response.in_progress``, the output item and content part opening,
one ``response.output_text.delta`` per word, their closing events, and ``response.completed``
last, each with its ``sequence_number``; usage counts ``input_tokens`` and ``output_tokens``.
"""

import json
import time
from typing import Any

__all__ = ["ResponsesReply", "input_words"]


def input_words(request: dict[str, Any]) -> int:
    """The prompt's size as the fake counts it: words, plus four per message (instructions too)."""
    given = request.get("input")
    if isinstance(given, str):
        count = len(given.split()) + 4
    else:
        count = sum(_item_words(item) + 4 for item in given or () if isinstance(item, dict))
    instructions = request.get("instructions")
    if isinstance(instructions, str):
        count += len(instructions.split()) + 4
    return count


def _item_words(item: dict[str, Any]) -> int:
    content = item.get("content")
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        return sum(
            len(p["text"].split())
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return 0


class ResponsesReply:
    """One fake Responses answer of ``count`` words (``tok0 tok1 …``)."""

    def __init__(self, request: dict[str, Any], request_id: str, prompt: int, count: int) -> None:
        self.request_id = request_id
        self._request = request
        self._prompt = prompt
        self._count = count
        self._id = f"resp_{request_id}"
        self._item = f"msg_{request_id}"
        self._created = int(time.time())
        self._sequence = 0

    def whole(self) -> bytes:
        """The ``response`` object, completed."""
        return json.dumps(self._response("completed")).encode()

    def events(self) -> list[bytes]:
        """The stream, framed as SSE events."""
        words = [f"tok{i} " for i in range(self._count)]
        text = "".join(words)
        where = {"item_id": self._item, "output_index": 0, "content_index": 0}
        part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
        events = [
            self._event("response.created", response=self._response("in_progress")),
            self._event("response.in_progress", response=self._response("in_progress")),
            self._event("response.output_item.added", output_index=0, item=self._message("")),
            self._event("response.content_part.added", **where, part=part),
        ]
        events += [
            self._event("response.output_text.delta", **where, delta=w, logprobs=[]) for w in words
        ]
        events += [
            self._event("response.output_text.done", **where, text=text, logprobs=[]),
            self._event("response.content_part.done", **where, part={**part, "text": text}),
            self._event("response.output_item.done", output_index=0, item=self._message(text)),
            self._event("response.completed", response=self._response("completed")),
        ]
        return events

    def _event(self, kind: str, **fields: Any) -> bytes:
        body = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return f"event: {kind}\ndata: {json.dumps(body)}\n\n".encode()

    def _message(self, text: str) -> dict[str, Any]:
        done = bool(text) or self._count == 0
        content = [{"type": "output_text", "text": text, "annotations": []}] if done else []
        return {
            "id": self._item,
            "type": "message",
            "role": "assistant",
            "status": "completed" if done else "in_progress",
            "content": content,
        }

    def _response(self, status: str) -> dict[str, Any]:
        completed = status == "completed"
        text = "".join(f"tok{i} " for i in range(self._count))
        usage = {
            "input_tokens": self._prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": self._count,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self._prompt + self._count,
        }
        return {
            "id": self._id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "model": self._request.get("model"),
            "instructions": self._request.get("instructions"),
            "max_output_tokens": self._request.get("max_output_tokens"),
            "output": [self._message(text)] if completed else [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "store": False,
            "error": None,
            "incomplete_details": None,
            "usage": usage if completed else None,
        }
