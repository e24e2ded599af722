"""A deterministic engine for fast tests: the same surface as the vLLM engine, no model.

It speaks the OpenAI wire format closely enough for the SDKs: a reply is ``max_tokens`` words
(``tok0 tok1 …``, at most 16 unless asked for more), usage counts words, a prompt longer than
the context is refused, ``max_tokens`` beyond the context left is lowered to fit, and a request
naming a tool with ``tool_choice`` gets a tool call when the model has a tool parser (text
otherwise). Knobs slow it down, make it fail, or kill it, so that tests can drive every path of
the neuron that the real engine would.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from cortex_core.errors import (
    ContextLengthExceededError,
    CortexError,
    EngineFailedError,
    InvalidRequestError,
)
from cortex_core.wire.control import TokenizeRequest
from cortex_neuron.engine.base import Answer, EnginePlan, EngineStats
from cortex_neuron.engine.fake_responses import ResponsesReply, input_words

__all__ = ["FakeEngine", "FakeStarter"]

_DEFAULT_TOKENS = 16


class FakeEngine:
    """One fake model.

    Args:
        plan: What the neuron asked for.
        token_delay: Seconds between streamed tokens (and per token when not streaming).
        first_token_delay: Seconds before the first token (a long prefill).
        concurrency: Requests it runs at once.
    """

    def __init__(
        self,
        plan: EnginePlan,
        *,
        token_delay: float = 0.0,
        first_token_delay: float = 0.0,
        concurrency: int = 4,
    ) -> None:
        self.plan = plan
        self.token_delay = token_delay
        self.first_token_delay = first_token_delay
        self.running: set[str] = set()
        self.load_phases: dict[str, float] = {}
        self.shut_down = False
        self._concurrency = concurrency
        self._dead: str | None = None

    @property
    def max_model_len(self) -> int:
        """The plan's, else 2048."""
        return self.plan.max_model_len or 2048

    @property
    def max_concurrency(self) -> int:
        """As constructed."""
        return self._concurrency

    def kill(self, reason: str = "the engine's process died") -> None:
        """Die as a crashed engine would: requests fail, stats say so."""
        self._dead = reason

    async def chat(self, body: bytes, request_id: str) -> Answer:
        """A chat completion."""
        request = self._parse(body, "messages")
        messages = request["messages"]
        prompt = sum(_words(m.get("content")) + 4 for m in messages if isinstance(m, dict))
        return await self._answer(request, request_id, prompt, chat=True)

    async def completion(self, body: bytes, request_id: str) -> Answer:
        """A text completion."""
        request = self._parse(body, "prompt")
        return await self._answer(request, request_id, _words(request["prompt"]), chat=False)

    async def responses(self, body: bytes, request_id: str) -> Answer:
        """An OpenAI Responses answer (``max_output_tokens`` words; ``instructions`` count)."""
        request = self._parse(body, "input", limit="max_output_tokens")
        prompt = input_words(request)
        count = self._fit(prompt, request.get("max_output_tokens"))
        reply = ResponsesReply(request, request_id, prompt, count)
        return await self._run(request, reply, count)

    async def tokenize(self, request: TokenizeRequest) -> int:
        """Words, plus four per message."""
        if request.messages is not None:
            count = sum(_words(m.get("content")) + 4 for m in request.messages)
            return count + (len(json.dumps(request.tools)) // 4 if request.tools else 0)
        return _words(request.prompt)

    def stats(self) -> EngineStats:
        """Alive until killed."""
        return EngineStats(
            alive=self._dead is None, error=self._dead, unfinished_requests=len(self.running)
        )

    async def shutdown(self) -> None:
        """Nothing to stop but the flag."""
        self.shut_down = True

    def _parse(self, body: bytes, field: str, limit: str = "max_tokens") -> dict[str, Any]:
        try:
            request = json.loads(body)
        except ValueError as exc:
            raise InvalidRequestError(f"The body is not valid JSON: {exc}") from exc
        if not isinstance(request, dict) or field not in request:
            raise InvalidRequestError(f"`{field}` is required", param=field)
        if not _well_formed(field, request[field]):  # vLLM's pydantic models refuse the rest
            raise InvalidRequestError(f"`{field}` is not {_SHAPES[field]}", param=field)
        max_tokens = request.get(limit)
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise InvalidRequestError(f"{limit} must be at least 1", param=limit)
        return request

    def _fit(self, prompt: int, asked: int | None) -> int:
        """How many tokens to answer: ``asked`` (else 16), lowered to the context left."""
        if self._dead is not None:
            raise EngineFailedError(f"the engine failed: {self._dead}")
        left = self.max_model_len - prompt
        if left < 1:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {self.max_model_len} tokens. However, "
                f"your prompt contains {prompt} input tokens.",
                param="input_tokens",
            )
        return min(asked or _DEFAULT_TOKENS, left)

    async def _answer(
        self, request: dict[str, Any], request_id: str, prompt: int, *, chat: bool
    ) -> Answer:
        count = self._fit(prompt, request.get("max_tokens"))
        tool = _named_tool(request) if self.plan.tool_call_parser else None
        reply = _Reply(request, request_id, prompt, count, chat=chat, tool=tool)
        return await self._run(request, reply, count)

    async def _run(
        self, request: dict[str, Any], reply: "_Reply | ResponsesReply", count: int
    ) -> Answer:
        self.running.add(reply.request_id)
        if request.get("stream"):
            return self._stream(reply)
        try:
            await asyncio.sleep(self.first_token_delay + self.token_delay * count)
            self._check()
            return reply.whole()
        finally:
            self.running.discard(reply.request_id)

    async def _stream(self, reply: "_Reply | ResponsesReply") -> AsyncIterator[bytes]:
        try:
            await asyncio.sleep(self.first_token_delay)
            for event in reply.events():
                self._check()
                yield event
                await asyncio.sleep(self.token_delay)
        finally:
            self.running.discard(reply.request_id)

    def _check(self) -> None:
        if self._dead is not None:
            raise EngineFailedError(f"the engine failed: {self._dead}")


class FakeStarter:
    """Starts fake engines; remembers what it was asked for.

    Args:
        load_delay: Seconds a load takes.
        fail: An error every load raises.
        engine_options: Passed to each :class:`FakeEngine`.
    """

    def __init__(
        self,
        *,
        load_delay: float = 0.0,
        fail: CortexError | None = None,
        **engine_options: Any,
    ) -> None:
        self.load_delay = load_delay
        self.fail = fail
        self.engine_options = engine_options
        self.plans: list[EnginePlan] = []
        self.engines: dict[str, FakeEngine] = {}

    async def __call__(self, plan: EnginePlan) -> FakeEngine:
        """Start one engine."""
        self.plans.append(plan)
        started = time.monotonic()
        await asyncio.sleep(self.load_delay)
        if self.fail is not None:
            raise self.fail
        engine = FakeEngine(plan, **self.engine_options)
        engine.load_phases = {"engine": time.monotonic() - started}
        self.engines[plan.model_id] = engine
        return engine


class _Reply:
    """The OpenAI JSON of one fake answer."""

    def __init__(
        self,
        request: dict[str, Any],
        request_id: str,
        prompt: int,
        count: int,
        *,
        chat: bool,
        tool: str | None,
    ) -> None:
        self.request_id = request_id
        self._model = request.get("model")
        self._prompt = prompt
        self._count = count
        self._chat = chat
        self._tool = tool
        options = request.get("stream_options") or {}
        self._usage_chunk = bool(options.get("include_usage"))
        self._created = int(time.time())

    def whole(self) -> bytes:
        text = " ".join(f"tok{i}" for i in range(self._count))
        if self._chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if self._tool is not None:
                message = {"role": "assistant", "content": None, "tool_calls": [self._call()]}
            choice: dict[str, Any] = {"index": 0, "message": message}
        else:
            choice = {"index": 0, "text": text}
        choice["finish_reason"] = "tool_calls" if self._tool else "length"
        return self._json([choice], chunk=False, usage=True)

    def events(self) -> list[bytes]:
        if self._chat and self._tool is not None:
            deltas = [{"role": "assistant", "tool_calls": [{"index": 0, **self._call()}]}]
        elif self._chat:
            deltas = [{"role": "assistant", "content": ""}]
            deltas += [{"content": f"tok{i} "} for i in range(self._count)]
        else:
            deltas = [{"text": f"tok{i} "} for i in range(self._count)]
        events = []
        for i, delta in enumerate(deltas):
            choice = {"index": 0, **({"delta": delta} if self._chat else delta)}
            last = i == len(deltas) - 1
            choice["finish_reason"] = ("tool_calls" if self._tool else "length") if last else None
            events.append(b"data: " + self._json([choice], chunk=True, usage=False) + b"\n\n")
        if self._usage_chunk:
            events.append(b"data: " + self._json([], chunk=True, usage=True) + b"\n\n")
        return [*events, b"data: [DONE]\n\n"]

    def _call(self) -> dict[str, Any]:
        return {
            "id": f"call_{self.request_id}",
            "type": "function",
            "function": {"name": self._tool, "arguments": "{}"},
        }

    def _json(self, choices: list[dict[str, Any]], *, chunk: bool, usage: bool) -> bytes:
        kind = "text_completion"
        if self._chat:
            kind = "chat.completion.chunk" if chunk else "chat.completion"
        body: dict[str, Any] = {
            "id": f"{'chatcmpl' if self._chat else 'cmpl'}-{self.request_id}",
            "object": kind,
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if usage:
            body["usage"] = {
                "prompt_tokens": self._prompt,
                "completion_tokens": self._count,
                "total_tokens": self._prompt + self._count,
            }
        return json.dumps(body).encode()


_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_SHAPES = {
    "messages": "a non-empty list of messages, each with a role",
    "prompt": "a non-empty string or list",
    "input": "a string or a list of items",
}


def _well_formed(field: str, value: Any) -> bool:
    """Whether the request's main field has the shape vLLM's request models accept."""
    if field == "messages":
        return (
            isinstance(value, list)
            and bool(value)
            and all(isinstance(m, dict) and str(m.get("role")) in _ROLES for m in value)
        )
    if field == "prompt":
        return isinstance(value, str | list) and bool(value)
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(item, dict) for item in value)
    )


def _words(content: Any) -> int:
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        return sum(_words(p.get("text")) for p in content if isinstance(p, dict))
    return 0


def _named_tool(request: dict[str, Any]) -> str | None:
    choice = request.get("tool_choice")
    if request.get("tools") and isinstance(choice, dict):
        name = choice.get("function", {}).get("name")
        return name if isinstance(name, str) else None
    return None
