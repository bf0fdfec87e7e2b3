"""The request model as an Anthropic Messages API body, and what Anthropic cannot honour.

Pure functions (no SDK import): the provider sends the body as is on its direct path and hands
the same fields to the SDK's ``messages.create`` otherwise. Keys are in the SDK's own order
(alphabetical, as its ``create`` builds the body), so both paths send the same bytes.

Mapping: ``system`` and leading system messages -> ``system``; ``tool`` messages -> a user turn
of ``tool_result`` blocks (merged with the user text that follows, results first, as the API
wants); ``stop`` -> ``stop_sequences``; ``thinking.budget_tokens`` -> ``thinking`` enabled;
``reasoning_effort`` low..max -> ``output_config.effort``; ``metadata`` stays in the gateway.
"""

from __future__ import annotations

from typing import Any

from ssegate.request import (
    ContentBlock,
    GenerationRequest,
    ImageBlock,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    unsupported,
)

PROVIDER = "anthropic"
MIN_THINKING_BUDGET = 1024
_EFFORTS = ("low", "medium", "high", "xhigh", "max")


def check(request: GenerationRequest) -> None:
    """A 400 naming the first field Anthropic's Messages API cannot honour."""
    if request.temperature is not None:
        raise unsupported(PROVIDER, "temperature", "takes no temperature (the Messages API has none)")
    if request.top_p is not None:
        raise unsupported(PROVIDER, "top_p", "takes no top_p (the Messages API has none)")
    if request.reasoning_effort is not None and request.reasoning_effort not in _EFFORTS:
        raise unsupported(
            PROVIDER,
            "reasoning_effort",
            f"takes an effort of {', '.join(_EFFORTS)}, not {request.reasoning_effort!r}",
        )
    seen_other = False
    for index, message in enumerate(request.messages):
        if message.role != "system":
            seen_other = True
        elif seen_other:
            raise unsupported(
                PROVIDER, f"messages[{index}].role", "takes system messages only before the conversation"
            )
    if request.thinking is not None:
        budget = request.thinking.budget_tokens
        if budget < MIN_THINKING_BUDGET:
            raise unsupported(
                PROVIDER,
                "thinking.budget_tokens",
                f"needs a budget of at least {MIN_THINKING_BUDGET}",
            )
        if budget >= request.max_tokens:
            raise unsupported(PROVIDER, "thinking.budget_tokens", "needs a thinking budget below max_tokens")
        if request.tool_choice is not None and request.tool_choice.type in ("any", "tool"):
            raise unsupported(
                PROVIDER, "tool_choice", "cannot force a tool call while thinking (use auto or none)"
            )
    if not request.tools:
        for where, _ in request.tool_uses():
            raise unsupported(
                PROVIDER, "tools", f"needs the tools defined when the conversation has tool calls ({where})"
            )


def body(request: GenerationRequest, model: str) -> dict[str, Any]:
    """The Messages API body (``stream: true``) for ``request``; :func:`check` it first."""
    system = [request.system] if request.system else []
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            system.append(message.text)
            continue
        role = "assistant" if message.role == "assistant" else "user"
        content: str | list[dict[str, Any]] = (
            message.content if isinstance(message.content, str) else [_block(b) for b in message.content]
        )
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "user" == role and (message.role == "tool" or last["tool"]):
            # Tool results and the user's words after them are one user turn.
            last["content"] = _as_blocks(last["content"]) + _as_blocks(content)
            continue
        messages.append({"role": role, "content": content, "tool": message.role == "tool"})
    for item in messages:
        del item["tool"]
    fields: dict[str, Any] = {
        "max_tokens": request.max_tokens,
        "messages": messages,
        "model": model,
        "stream": True,
    }
    if request.reasoning_effort is not None:
        fields["output_config"] = {"effort": request.reasoning_effort}
    if request.stop:
        fields["stop_sequences"] = list(request.stop)
    if system:
        fields["system"] = "\n\n".join(system)
    if request.thinking is not None:
        fields["thinking"] = {"type": "enabled", "budget_tokens": request.thinking.budget_tokens}
    if request.tool_choice is not None:
        choice: dict[str, Any] = {"type": request.tool_choice.type}
        if request.tool_choice.name is not None:
            choice["name"] = request.tool_choice.name
        fields["tool_choice"] = choice
    if request.tools:
        fields["tools"] = [_tool(tool.name, tool.description, tool.input_schema) for tool in request.tools]
    return dict(sorted(fields.items()))  # the SDK's order


def _tool(name: str, description: str | None, schema: Any) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": name}
    if description is not None:
        tool["description"] = description
    tool["input_schema"] = dict(schema)
    return tool


def _as_blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _block(block: ContentBlock) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ImageBlock):
        return _image(block)
    if isinstance(block, ToolUseBlock):
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": dict(block.input)}
    if isinstance(block, ThinkingBlock):
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    if isinstance(block, RedactedThinkingBlock):
        return {"type": "redacted_thinking", "data": block.data}
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": block.tool_use_id}
    result["content"] = (
        block.content if isinstance(block.content, str) else [_block(item) for item in block.content]
    )
    if block.is_error:
        result["is_error"] = True
    return result


def _image(block: ImageBlock) -> dict[str, Any]:
    if block.url is not None:
        return {"type": "image", "source": {"type": "url", "url": block.url}}
    return {"type": "image", "source": {"type": "base64", "media_type": block.media_type, "data": block.data}}


__all__ = ["PROVIDER", "body", "check"]
