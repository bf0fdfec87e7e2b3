"""The request model as an OpenAI Chat Completions body, and what OpenAI cannot honour.

Pure functions (no SDK import): the provider sends the body as is on its direct path and hands
the same fields to the SDK's ``chat.completions.create`` otherwise. Keys are in the SDK's own
order (``model``, ``stream``, ``messages``, then alphabetical), so both paths send the same bytes.

Mapping: ``system`` -> a first system message; an assistant's ``tool_use`` blocks ->
``tool_calls`` (arguments as a JSON string); each ``tool_result`` -> a ``tool`` message (OpenAI has
no error flag: an error result's text is sent as ``Error: <text>``); an assistant's
``thinking`` blocks (another vendor's signed artefacts) are left out; images -> ``image_url`` parts
(inline ones as ``data:`` URLs); ``tool_choice`` any -> ``required``, a named tool -> a
``function`` choice; ``metadata`` stays in the gateway.
"""

from __future__ import annotations

from typing import Any

import orjson

from ssegate.request import (
    GenerationRequest,
    ImageBlock,
    Message,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    unsupported,
)

PROVIDER = "openai"
MAX_STOP_SEQUENCES = 4
_TOOL_CHOICES = {"auto": "auto", "none": "none", "any": "required"}


def check(request: GenerationRequest) -> None:
    """A 400 naming the first field OpenAI's Chat Completions API cannot honour."""
    if request.thinking is not None:
        raise unsupported(PROVIDER, "thinking", "has no thinking budget; use reasoning_effort")
    if len(request.stop) > MAX_STOP_SEQUENCES:
        raise unsupported(PROVIDER, "stop", f"takes at most {MAX_STOP_SEQUENCES} stop sequences")
    for m, message in enumerate(request.messages):
        if message.role != "tool" or isinstance(message.content, str):
            continue
        for b, block in enumerate(message.content):
            if isinstance(block, ToolResultBlock) and not isinstance(block.content, str):
                for i, item in enumerate(block.content):
                    if isinstance(item, ImageBlock):
                        raise unsupported(
                            PROVIDER,
                            f"messages[{m}].content[{b}].content[{i}]",
                            "takes no images in tool results",
                        )


def body(request: GenerationRequest, model: str) -> dict[str, Any]:
    """The Chat Completions body (streamed, with usage) for ``request``; :func:`check` it first."""
    messages: list[dict[str, Any]] = []
    if request.system is not None:
        messages.append({"role": "system", "content": request.system})
    for message in request.messages:
        messages.extend(_messages(message))
    fields: dict[str, Any] = {
        "model": model,
        "stream": True,
        "messages": messages,
        # max_tokens, not max_completion_tokens: every compatible server understands it.
        "max_tokens": request.max_tokens,
    }
    if request.reasoning_effort is not None:
        fields["reasoning_effort"] = request.reasoning_effort
    if request.stop:
        fields["stop"] = list(request.stop)
    fields["stream_options"] = {"include_usage": True}
    if request.temperature is not None:
        fields["temperature"] = request.temperature
    if request.tool_choice is not None:
        name = request.tool_choice.name
        fields["tool_choice"] = (
            {"type": "function", "function": {"name": name}}
            if name is not None
            else _TOOL_CHOICES[request.tool_choice.type]
        )
    if request.tools:
        fields["tools"] = [
            {"type": "function", "function": _function(tool.name, tool.description, tool.input_schema)}
            for tool in request.tools
        ]
    if request.top_p is not None:
        fields["top_p"] = request.top_p
    return fields


def _function(name: str, description: str | None, schema: Any) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if description is not None:
        function["description"] = description
    function["parameters"] = dict(schema)
    return function


def _messages(message: Message) -> list[dict[str, Any]]:
    if message.role == "system":
        return [{"role": "system", "content": message.text}]
    if message.role == "tool":
        return [_tool_message(block) for block in message.blocks if isinstance(block, ToolResultBlock)]
    if message.role == "user":
        if isinstance(message.content, str):
            return [{"role": "user", "content": message.content}]
        return [{"role": "user", "content": [_part(block) for block in message.content]}]
    text = "".join(block.text for block in message.blocks if isinstance(block, TextBlock))
    calls = [
        {
            "id": block.id,
            "type": "function",
            "function": {"name": block.name, "arguments": orjson.dumps(block.input).decode()},
        }
        for block in message.blocks
        if isinstance(block, ToolUseBlock)
    ]
    assistant: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        assistant["tool_calls"] = calls
    return [assistant]


def _part(block: Any) -> dict[str, Any]:
    if isinstance(block, ImageBlock):
        return {"type": "image_url", "image_url": {"url": block.data_url}}
    assert isinstance(block, TextBlock)
    return {"type": "text", "text": block.text}


def _tool_message(block: ToolResultBlock) -> dict[str, Any]:
    text = block.text
    return {
        "role": "tool",
        "tool_call_id": block.tool_use_id,
        "content": f"Error: {text}" if block.is_error else text,
    }


__all__ = ["PROVIDER", "body", "check"]
