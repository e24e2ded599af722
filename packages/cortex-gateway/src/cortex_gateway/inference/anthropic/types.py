"""The Anthropic Messages API as msgspec structs: request, response, stream events, count_tokens.

Requests decode strictly where the gateway reads (a missing or mistyped field, an unknown block
``type`` is a 400 naming the field) and leniently elsewhere: fields a local model cannot use
(``metadata``, ``output_config``, ``context_management``, ``cache_control`` on any block,
``defer_loading`` on a tool) are not declared, so msgspec skips them.
"""

from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "Base64Source",
    "Block",
    "ContentBlockDelta",
    "ContentBlockStart",
    "ContentBlockStop",
    "CountTokensRequest",
    "Event",
    "ImageBlock",
    "InputJsonDelta",
    "Message",
    "MessageDelta",
    "MessageDeltaBody",
    "MessageResponse",
    "MessageStart",
    "MessageStop",
    "MessagesRequest",
    "Ping",
    "Prompt",
    "RedactedThinkingBlock",
    "StopReason",
    "TextBlock",
    "TextDelta",
    "Thinking",
    "ThinkingBlock",
    "ThinkingDelta",
    "Tokens",
    "Tool",
    "ToolChoice",
    "ToolResultBlock",
    "ToolUseBlock",
    "UrlSource",
    "Usage",
]


class _Block(msgspec.Struct, kw_only=True, tag_field="type"):
    pass


class TextBlock(_Block, tag="text"):
    """A text block (``cache_control`` and ``citations`` skipped)."""

    text: str


class Base64Source(msgspec.Struct, kw_only=True, tag="base64", tag_field="type"):
    """An image given inline."""

    media_type: str
    data: str


class UrlSource(msgspec.Struct, kw_only=True, tag="url", tag_field="type"):
    """An image given by URL."""

    url: str


class ImageBlock(_Block, tag="image"):
    """An image, sent to the model as an ``image_url`` part."""

    source: Base64Source | UrlSource


class ToolUseBlock(_Block, tag="tool_use"):
    """A tool call of the assistant; ``input`` is the parsed arguments."""

    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(_Block, tag="tool_result"):
    """A tool's answer in a user turn, for the ``tool_use`` of ``tool_use_id``."""

    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] = ""
    is_error: bool = False


class ThinkingBlock(_Block, tag="thinking"):
    """Reasoning: in answers when asked for, dropped from requests."""

    thinking: str
    signature: str = ""


class RedactedThinkingBlock(_Block, tag="redacted_thinking"):
    """Reasoning the client cannot read; dropped from requests."""

    data: str


Block = (
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock
)


class Message(msgspec.Struct, kw_only=True):
    """A turn; ``system`` turns inside ``messages`` are Claude Code's (merged into one)."""

    role: Literal["user", "assistant", "system"]
    content: str | list[Block]


class Tool(msgspec.Struct, kw_only=True):
    """A client tool; a server tool (a ``type`` other than ``custom``) is left out."""

    name: str
    description: str | None = None
    input_schema: dict[str, Any] = msgspec.field(default_factory=dict)
    type: str | None = None


class ToolChoice(msgspec.Struct, kw_only=True):
    """``tool_choice``: ``auto``, ``any`` (OpenAI's ``required``), ``none``, or one tool."""

    type: Literal["auto", "any", "none", "tool"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(msgspec.Struct, kw_only=True):
    """``thinking``: only whether it is asked for counts (``budget_tokens`` skipped)."""

    type: str


class Prompt(msgspec.Struct, kw_only=True):
    """What both ``/v1/messages`` and ``count_tokens`` take: the model, turns and tools."""

    model: str
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None


class MessagesRequest(Prompt, kw_only=True):
    """``POST /v1/messages``."""

    max_tokens: Annotated[int, msgspec.Meta(ge=1)]
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None


class CountTokensRequest(Prompt, kw_only=True):
    """``POST /v1/messages/count_tokens``: a request without its sampling fields."""


class Tokens(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Answer to ``count_tokens``; ``estimated`` (ours) when no neuron had the model loaded."""

    input_tokens: int
    estimated: bool = False


class Usage(msgspec.Struct, kw_only=True):
    """Token counts, always all four (Claude Code rejects a stream without them)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class MessageResponse(msgspec.Struct, kw_only=True, tag="message", tag_field="type"):
    """A whole answer (and, with empty ``content``, a stream's ``message_start``)."""

    id: str
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[TextBlock | ToolUseBlock | ThinkingBlock]
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: Usage


class Event(msgspec.Struct, kw_only=True, tag_field="type"):
    """A stream event; its tag is both the SSE ``event:`` name and its ``type``."""


class MessageStart(Event, tag="message_start"):
    """The stream's first event, exactly once: the message without content."""

    message: MessageResponse


class ContentBlockStart(Event, tag="content_block_start"):
    """A block opens at ``index``."""

    index: int
    content_block: TextBlock | ToolUseBlock | ThinkingBlock


class TextDelta(msgspec.Struct, kw_only=True, tag="text_delta", tag_field="type"):
    """More text of a text block."""

    text: str


class InputJsonDelta(msgspec.Struct, kw_only=True, tag="input_json_delta", tag_field="type"):
    """More of a tool call's arguments (JSON text, split anywhere)."""

    partial_json: str


class ThinkingDelta(msgspec.Struct, kw_only=True, tag="thinking_delta", tag_field="type"):
    """More reasoning of a thinking block."""

    thinking: str


class ContentBlockDelta(Event, tag="content_block_delta"):
    """More of the block at ``index``."""

    index: int
    delta: TextDelta | InputJsonDelta | ThinkingDelta


class ContentBlockStop(Event, tag="content_block_stop"):
    """The block at ``index`` is complete."""

    index: int


class MessageDeltaBody(msgspec.Struct, kw_only=True):
    """How the message ended."""

    stop_reason: StopReason | None
    stop_sequence: str | None = None


class MessageDelta(Event, tag="message_delta"):
    """The stream's end: stop reason and final usage."""

    delta: MessageDeltaBody
    usage: Usage


class MessageStop(Event, tag="message_stop"):
    """The stream's last event."""


class Ping(Event, tag="ping"):
    """A keep-alive while the model is busy (a cold load, a long prefill)."""
