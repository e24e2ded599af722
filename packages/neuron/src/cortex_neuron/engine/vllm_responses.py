"""The Responses API on a vLLM engine: vLLM's own ``OpenAIServingResponses``, framed as SSE.

Split from :mod:`cortex_neuron.engine.vllm`, which builds it: vLLM is imported here only after
that module has set vLLM's environment and started the engine (its import is cached there).
vLLM's Responses layer yields event objects; they go to the client as its own router frames
them (``event: <type>`` then ``data: <json>``), ``sequence_number`` included. An ``error``
event from vLLM becomes our error, so the neuron ends the stream in its one way. Closing the
stream closes vLLM's generator, which aborts the request inside the engine.
"""

from collections.abc import AsyncIterator, Callable
from typing import Any

from cortex_core.errors import CortexError, EngineFailedError
from cortex_neuron.engine.base import Answer, EnginePlan

__all__ = ["ResponsesServing"]


class ResponsesServing:
    """vLLM's Responses serving for one engine (``llm``), sharing its models and renderer."""

    def __init__(self, llm: Any, models: Any, renderer: Any, plan: EnginePlan) -> None:
        from vllm.entrypoints.openai.responses.protocol import ResponsesRequest
        from vllm.entrypoints.openai.responses.serving import OpenAIServingResponses

        self.request_type = ResponsesRequest
        self.create = OpenAIServingResponses(
            llm,
            models,
            renderer,
            request_logger=None,
            chat_template=plan.chat_template,
            chat_template_content_format="auto",
            reasoning_parser=plan.reasoning_parser or "",
            enable_auto_tools=plan.tool_call_parser is not None,
            tool_parser=plan.tool_call_parser,
        ).create_responses

    def answer(
        self, answer: Any, error: Callable[[dict[str, Any]], CortexError], dead: type[Exception]
    ) -> Answer:
        """The seam's answer for vLLM's (a response, or a stream of events).

        ``error`` turns vLLM's error detail into ours; ``dead`` is vLLM's ``EngineDeadError``.
        """
        if isinstance(answer, AsyncIterator):
            return _events(answer, error, dead)
        return bytes(answer.model_dump_json(by_alias=True).encode())


async def _events(
    stream: AsyncIterator[Any],
    error: Callable[[dict[str, Any]], CortexError],
    dead: type[Exception],
) -> AsyncIterator[bytes]:
    try:
        async for event in stream:
            kind = getattr(event, "type", "unknown")
            if kind == "error":
                raise error({"message": event.message, "param": getattr(event, "param", None)})
            data = event.model_dump_json(indent=None, by_alias=True)
            yield f"event: {kind}\ndata: {data}\n\n".encode()
    except dead as exc:
        raise EngineFailedError("vLLM's engine core died") from exc
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
