"""The agent: a tool loop on a model (the offline demo model, or Anthropic with a key), streamed
through ssegate as one generation.

Each turn asks the model with the tools; when it calls tools, the agent runs them, shows each call
and its result to the viewers, and asks again with the results, until the model answers in words
(or ``MAX_TURNS``). A cancel or an abandoned answer stops it wherever it is waiting (the model's
stream, a tool): ``CancelledError`` arrives there, and the ``finally`` closes the model's call.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import operator
from collections.abc import AsyncIterator, Callable
from typing import Any

from ssegate.producers import (
    Data,
    Event,
    Finish,
    Generation,
    Producer,
    Status,
    Text,
    Thinking,
    ToolCall,
    Usage,
)
from ssegate.providers.base import (
    Finished,
    Provider,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallStart,
)
from ssegate.providers.base import Usage as ModelUsage
from ssegate.request import GenerationRequest, Message, TextBlock, Tool, ToolResultBlock, ToolUseBlock

MAX_TURNS = 4
SYSTEM = "You are a helpful assistant. Use the tools when they help; answer briefly."

TOOLS = (
    Tool(
        "get_weather",
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "The current weather in a city",
    ),
    Tool(
        "calculator",
        {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
        "Evaluate an arithmetic expression",
    ),
)


async def get_weather(city: str) -> str:
    await asyncio.sleep(0.05)  # a real service would be called here
    digest = int(hashlib.sha256(city.lower().encode()).hexdigest(), 16)
    return f"{city}: {digest % 30 + 2} °C, {['sunny', 'cloudy', 'rainy', 'windy'][digest % 4]}"


_OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        if isinstance(node.op, ast.Pow) and abs(_evaluate(node.right)) > 100:
            raise ValueError("exponent too large")
        return float(_OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right)))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return float(_OPERATORS[type(node.op)](_evaluate(node.operand)))
    raise ValueError("only numbers and + - * / % ** are allowed")


async def calculator(expression: str) -> str:
    try:
        value = _evaluate(ast.parse(expression.replace("^", "**"), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError) as exc:
        return f"error: {exc}"
    return f"{expression} = {value:g}"


async def run_tool(name: str, arguments: dict[str, Any]) -> str:
    if name == "get_weather":
        return await get_weather(str(arguments.get("city", "")))
    if name == "calculator":
        return await calculator(str(arguments.get("expression", "")))
    return f"error: no tool called {name!r}"


def make_agent(model: Provider) -> Producer:
    """The ``agent`` producer, asking ``model`` (a ssegate provider) on each turn."""

    async def agent(generation: Generation) -> AsyncIterator[Event]:
        messages = list(generation.request.messages)
        used = {"input_tokens": 0, "output_tokens": 0}
        finish = "stop"
        for turn in range(MAX_TURNS):
            yield Status("model", f"Asking the model (turn {turn + 1})", progress=turn / MAX_TURNS)
            request = GenerationRequest(tuple(messages), system=SYSTEM, tools=TOOLS, max_tokens=1024)
            text: list[str] = []
            calls: dict[str, tuple[str, list[str]]] = {}
            turn_usage = ModelUsage()
            # Closing the model's stream closes its HTTP request: leaving early stops the tokens.
            stream = model.stream(request)
            try:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        text.append(event.text)
                        yield Text(event.text)
                    elif isinstance(event, ThinkingDelta):
                        yield Thinking(event.text)
                    elif isinstance(event, ToolCallStart):
                        calls[event.id] = (event.name, [])
                    elif isinstance(event, ToolCallDelta):
                        calls[event.id][1].append(event.partial_json)
                    elif isinstance(event, ModelUsage):
                        turn_usage = event
                    elif isinstance(event, Finished):
                        finish = event.finish_reason
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
            used["input_tokens"] += turn_usage.input_tokens or 0
            used["output_tokens"] += turn_usage.output_tokens or 0
            if finish != "tool_use" or not calls:
                break
            # Run the calls; the viewers see each call and what it returned.
            blocks: list[TextBlock | ToolUseBlock] = [TextBlock("".join(text))] if "".join(text) else []
            results: list[Message] = []
            for call_id, (name, parts) in calls.items():
                arguments = json.loads("".join(parts) or "{}")
                yield ToolCall(call_id, name, arguments)
                yield Status("tool", f"Running {name}")
                result = await run_tool(name, arguments)
                yield Data("tool_result", {"id": call_id, "name": name, "result": result})
                blocks.append(ToolUseBlock(call_id, name, arguments))
                results.append(Message("tool", (ToolResultBlock(call_id, result),)))
            messages += [Message("assistant", tuple(blocks)), *results]
            yield Text("\n\n")
        yield Usage(**used)
        yield Finish(finish)

    return Producer(agent, name="agent", model=model.info.default_model)
