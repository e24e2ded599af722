"""The commented starter cortex.toml and models.toml that ``cortex config init`` writes.

Every key of DESIGN §5 appears with its default and a comment; the values are rendered by tomli-w,
so what is written is exactly what the loader reads back. The repository's
``cortex.example.toml`` and ``models.example.toml`` are these files, checked by a test.
"""

from typing import Any

import tomli_w

__all__ = ["CORTEX_TOML", "MODELS_TOML", "render"]

Entry = tuple[str, Any, str]
"""A key, its value and the comment above it."""

Section = tuple[str | None, str, list[Entry]]
"""A table header (``None`` for top-level keys), the comment above it, its entries."""


def render(intro: str, sections: list[Section]) -> str:
    """A TOML document: ``intro`` as comments, then each section with a comment per key."""
    lines = [f"# {line}".rstrip() for line in intro.splitlines()]
    for header, comment, entries in sections:
        lines.append("")
        lines.extend(f"# {line}" for line in comment.splitlines() if comment)
        if header is not None:
            lines.append(header)
        for key, value, note in entries:
            lines.extend(f"# {line}" for line in note.splitlines())
            lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, dict):
        inner = ", ".join(f"{k} = {_value(v)}" for k, v in value.items())
        return f"{{ {inner} }}" if inner else "{}"
    if isinstance(value, list):
        return f"[{', '.join(_value(v) for v in value)}]"
    rendered: str = tomli_w.dumps({"v": value})
    return rendered.removeprefix("v = ").rstrip("\n")


CORTEX_TOML = render(
    """cortex.toml: the cortex gateway (`cortex serve --config cortex.toml`).
Every key is shown with its default. Environment variables override keys:
CORTEX_GATEWAY__LISTEN=... sets [gateway] listen, CORTEX__MODELS_CONFIG=... a top-level key.
Relative paths are relative to this file.""",
    [
        (
            None,
            "",
            [("models_config", "models.toml", "The models the fleet serves (a path).")],
        ),
        (
            "[gateway]",
            "",
            [
                ("listen", "0.0.0.0:31313", "The client API (OpenAI and Anthropic), HOST:PORT."),
                ("metrics_listen", "0.0.0.0:31314", "Prometheus /metrics; bind it privately."),
                ("poll_interval_s", 2, "How often every neuron is polled."),
                ("load_timeout_s", 1800, "A cold load may take this long."),
                ("idle_timeout_s", 300, "A stream that sends nothing for this long is cut off."),
                ("request_timeout_s", 1800, "A non-streaming request may take this long."),
                ("max_body_bytes", 33554432, "Larger request bodies are refused with 413."),
                (
                    "queue_per_model",
                    256,
                    "Requests that may wait for one model (loading, or for room); then 429.",
                ),
                ("queue_timeout_s", 300, "A request waits this long for room; then 503."),
            ],
        ),
        (
            "[eviction]",
            "",
            [
                (
                    "strategy",
                    "lru",
                    "Which idle model makes room first: lru | priority | cost.",
                ),
                (
                    "defrag_after_cycles",
                    50,
                    "Warn after this many load/unload cycles on a node (0 = never).",
                ),
                ("idle_ttl_s", 0, "Unload a model idle this long (0 = never); pins exempt."),
                (
                    "max_pass_over_s",
                    30,
                    "A model's queue is passed over at most this long before others yield.",
                ),
                (
                    "lifecycle",
                    True,
                    "false: this gateway only routes, never loads or evicts (extra gateways).",
                ),
            ],
        ),
        (
            "[auth]",
            "",
            [
                ("api_keys", [], "Client keys for /v1/* and /fleet; empty = open."),
                ("admin_keys", [], "Keys for /admin/* (they also work as client keys)."),
                ("api_keys_file", "", "A file of client keys, one per line (# comments)."),
                ("admin_keys_file", "", "A file of admin keys, one per line."),
            ],
        ),
        (
            "[[neurons]]",
            "One [[neurons]] table per GPU host running `neuron serve`.",
            [
                ("name", "local", "How this node is named in /fleet, metrics and pins."),
                ("endpoint", "http://127.0.0.1:13131", "The neuron's address."),
                ("token", "", "The neuron's auth_token, if it has one..."),
                ("token_file", "", "...or a file holding it."),
            ],
        ),
    ],
)

MODELS_TOML = render(
    """models.toml: the models the cortex fleet serves (named by cortex.toml's models_config).
One [[models]] table per model. Relative paths are relative to this file.""",
    [
        (
            "[[models]]",
            "",
            [
                ("id", "Qwen/Qwen3-0.6B", "`org/name` or `name`, as the neurons know it."),
                ("harness", "vllm", "The engine; vllm is the only one."),
                ("vram_mb", 9000, "Memory it may use when loaded, in total across its devices."),
                ("min_devices", 1, "Devices it needs; also the tensor-parallel size when > 1."),
                ("min_device_vram_mb", 0, "Memory each of those devices must have in total."),
                ("pinned_on", [], "Node names where it is kept loaded and never evicted."),
                ("priority", 100, 'For strategy = "priority": lower is evicted first.'),
                ("aliases", ["small"], "Other names clients may use for it."),
                ("max_model_len", 8192, "Context length; leave out to use the model's own."),
                (
                    "tool_call_parser",
                    "hermes",
                    'vLLM tool parser; "" = tools are answered as text.',
                ),
                ("reasoning_parser", "qwen3", 'vLLM reasoning parser; "" = none.'),
                (
                    "chat_template",
                    "",
                    'A template file, when the model\'s own is wrong; "" = its own.',
                ),
                (
                    "engine_args",
                    {},
                    "More vLLM engine arguments (the neuron's allow-list applies).",
                ),
            ],
        )
    ],
)
