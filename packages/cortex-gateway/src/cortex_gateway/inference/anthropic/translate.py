"""Anthropic Messages ↔ OpenAI chat: a request into the neuron's body, its answer back.

Request (DESIGN §4): every piece of system content — ``system`` (a string or text blocks) and
``system`` turns inside ``messages`` — becomes ONE leading system message, since most chat
templates reject a second one. ``tool_use`` blocks become the assistant's ``tool_calls``
(arguments as JSON text), ``tool_result`` blocks ``tool`` messages (``is_error`` kept in the
text), images ``image_url`` parts, ``tools`` functions. Thinking blocks of earlier turns are
dropped: chat templates take no signed reasoning back. ``max_tokens`` goes as asked: the neuron
fits it to the context left.

Answer: text and ``tool_use`` blocks, ``reasoning_content`` as a ``thinking`` block only when the
request asked for thinking; ``stop_reason`` and usage mapped (``cached_tokens`` as
``cache_read_input_tokens``).
"""

import json
from typing import Any

import msgspec

from cortex_core.errors import ErrorDetail, InvalidRequestError, UpstreamError
from cortex_gateway.inference.anthropic.types import (
    Base64Source,
    Block,
    ImageBlock,
    MessageResponse,
    MessagesRequest as Request,
    Prompt,
    RedactedThinkingBlock,
    StopReason,
    TextBlock,
    ThinkingBlock,
    Tool,
    ToolChoice,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
)

__all__ = [
    "Completion",
    "OpenAIUsage",
    "chat_messages",
    "chat_request",
    "chat_tools",
    "message",
    "stop_reason",
    "thinking_requested",
    "tool_input",
    "usage",
]

Json = dict[str, Any]


def thinking_requested(request: Prompt) -> bool:
    """Whether the client asked for reasoning back (``enabled`` or ``adaptive``)."""
    return request.thinking is not None and request.thinking.type != "disabled"


def _text(blocks: str | list[TextBlock] | list[TextBlock | ImageBlock]) -> str:
    if isinstance(blocks, str):
        return blocks
    return "\n\n".join(b.text for b in blocks if isinstance(b, TextBlock))


def _image(block: ImageBlock) -> Json:
    source = block.source
    if isinstance(source, Base64Source):
        url = f"data:{source.media_type};base64,{source.data}"
    else:
        url = source.url
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(block: ToolResultBlock) -> Json:
    text = _text(block.content)
    if block.is_error:
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}


def _user(blocks: list[Block], at: str, known: set[str]) -> list[Json]:
    out: list[Json] = []
    parts: list[Json] = []
    for j, block in enumerate(blocks):
        if isinstance(block, ToolResultBlock):
            if block.tool_use_id not in known:
                raise InvalidRequestError(
                    f"{at}.content[{j}]: tool_result for {block.tool_use_id!r} follows no "
                    "tool_use block with that id",
                    param=f"{at}.content[{j}].tool_use_id",
                )
            out.append(_tool_result(block))
        elif isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(_image(block))
        else:
            raise InvalidRequestError(
                f"{at}.content[{j}]: a user turn cannot hold a {type(block).__name__}",
                param=f"{at}.content[{j}].type",
            )
    if parts:
        if all(p["type"] == "text" for p in parts):
            out.append({"role": "user", "content": "\n\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _assistant(blocks: list[Block], at: str, known: set[str]) -> Json:
    texts: list[str] = []
    calls: list[Json] = []
    for j, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            known.add(block.id)
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append(
                {
                    "id": block.id,
                    "type": "function",
                    "function": {"name": block.name, "arguments": arguments},
                }
            )
        elif not isinstance(block, ThinkingBlock | RedactedThinkingBlock):
            raise InvalidRequestError(
                f"{at}.content[{j}]: an assistant turn cannot hold a {type(block).__name__}",
                param=f"{at}.content[{j}].type",
            )
    # null content only beside tool calls: templates reject an assistant turn with neither
    turn: Json = {"role": "assistant", "content": "".join(texts) or (None if calls else "")}
    if calls:
        turn["tool_calls"] = calls
    return turn


def chat_messages(request: Prompt) -> list[Json]:
    """The OpenAI ``messages`` of a request, its system content merged in front.

    Raises:
        InvalidRequestError: a block where its role cannot have it, or a ``tool_result``
            without an earlier ``tool_use`` of its id (``param`` names the field).
    """
    system: list[str] = []
    if request.system:
        system.append(_text(request.system))
    turns: list[Json] = []
    known: set[str] = set()
    for i, turn in enumerate(request.messages):
        at = f"messages[{i}]"
        content = turn.content
        if turn.role == "system":
            if isinstance(content, str):
                system.append(content)
            else:
                system.append("\n\n".join(b.text for b in content if isinstance(b, TextBlock)))
        elif isinstance(content, str):
            turns.append({"role": turn.role, "content": content})
        elif turn.role == "user":
            turns.extend(_user(content, at, known))
        else:
            turns.append(_assistant(content, at, known))
    joined = "\n\n".join(s for s in system if s)
    return [{"role": "system", "content": joined}, *turns] if joined else turns


def chat_tools(tools: list[Tool] | None) -> list[Json] | None:
    """The client tools as OpenAI functions (server tools left out); ``None`` for none."""
    functions = [
        {
            "type": "function",
            "function": {
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "parameters": t.input_schema or {"type": "object", "properties": {}},
            },
        }
        for t in tools or ()
        if t.type in (None, "custom")
    ]
    return functions or None


def _tool_choice(choice: ToolChoice) -> str | Json:
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequestError(
                "tool_choice of type tool needs a name", param="tool_choice.name"
            )
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def chat_request(request: Request) -> Json:
    """The OpenAI chat request for ``request``, but its ``model``.

    Raises:
        InvalidRequestError: see :func:`chat_messages`.
    """
    body: Json = {
        "messages": chat_messages(request),
        "max_tokens": request.max_tokens,
    }
    tools = chat_tools(request.tools)
    if tools:
        body["tools"] = tools
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice(request.tool_choice)
            if request.tool_choice.disable_parallel_tool_use:
                body["parallel_tool_calls"] = False
    if request.stop_sequences:
        body["stop"] = request.stop_sequences
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.stream:
        # continuous usage puts prompt_tokens in the first chunk, for message_start (vLLM's).
        body["stream"] = True
        body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
    return body


class PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class OpenAIUsage(msgspec.Struct):
    """vLLM's usage, with the prompt's cached part when it reports it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptDetails | None = None


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Message(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    delta: _Message | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None


class Completion(msgspec.Struct):
    """An OpenAI chat answer or stream chunk, the parts translated back."""

    id: str = ""
    choices: list[_Choice] = msgspec.field(default_factory=list)
    usage: OpenAIUsage | None = None
    error: ErrorDetail | None = None
    """A stream's error event (the OpenAI envelope), in place of a chunk."""


def usage(report: OpenAIUsage | None) -> Usage:
    """Anthropic's usage for vLLM's (the cached part of the prompt as a cache read)."""
    if report is None:
        return Usage()
    details = report.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details is not None else 0
    return Usage(
        input_tokens=report.prompt_tokens,
        output_tokens=report.completion_tokens,
        cache_read_input_tokens=cached,
    )


def stop_reason(
    finish: str | None, matched: str | int | None, stops: list[str] | None
) -> tuple[StopReason, str | None]:
    """``stop_reason`` and ``stop_sequence`` for an OpenAI ``finish_reason``.

    vLLM says which stop string ended the text in ``stop_reason``; a stop token (an int) or
    none means the model's own end of turn.
    """
    if finish == "length":
        return "max_tokens", None
    if finish == "tool_calls":
        return "tool_use", None
    if isinstance(matched, str) and stops and matched in stops:
        return "stop_sequence", matched
    return "end_turn", None


def tool_input(arguments: str | None) -> dict[str, Any]:
    """A tool call's arguments as an object; what is not one is kept under ``arguments``."""
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def message(payload: bytes, model: str, request: Request) -> MessageResponse:
    """The Anthropic message for a neuron's whole chat answer.

    Raises:
        UpstreamError: the answer is not a chat completion with a choice.
    """
    try:
        answer = msgspec.json.decode(payload, type=Completion)
        choice = answer.choices[0]
        assert choice.message is not None
    except (msgspec.DecodeError, IndexError, AssertionError) as exc:
        raise UpstreamError(f"the neuron's answer is not a chat completion: {exc}") from exc
    said = choice.message
    content: list[TextBlock | ToolUseBlock | ThinkingBlock] = []
    reasoning = said.reasoning_content or said.reasoning
    if reasoning and thinking_requested(request):
        content.append(ThinkingBlock(thinking=reasoning))
    if said.content:
        content.append(TextBlock(text=said.content))
    for i, call in enumerate(said.tool_calls or ()):
        function = call.function or _Function()
        content.append(
            ToolUseBlock(
                id=call.id or f"toolu_{answer.id}_{i}",
                name=function.name or "",
                input=tool_input(function.arguments),
            )
        )
    reason, sequence = stop_reason(choice.finish_reason, choice.stop_reason, request.stop_sequences)
    return MessageResponse(
        id=f"msg_{answer.id}",
        model=model,
        content=content,
        stop_reason=reason,
        stop_sequence=sequence,
        usage=usage(answer.usage),
    )
