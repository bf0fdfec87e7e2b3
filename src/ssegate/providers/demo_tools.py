"""How the offline demo model uses tools: deterministic, from the words of the prompt.

- :func:`choose_tool`: the tool a prompt asks for (its name's and description's words in the
  prompt), as ``tool_choice`` allows: ``none`` never calls, ``any`` always calls the best match,
  a named tool is called, ``auto`` calls only on a match.
- :func:`arguments_for`: arguments that fit the tool's JSON Schema (each property by its type,
  filled from the prompt where it says: an arithmetic expression, a place after "in", a number).
- :func:`answer_from_results`: after the tools answered, an answer that uses what they returned.
"""

from __future__ import annotations

import re
from typing import Any

from ssegate.request import GenerationRequest, Tool, ToolResultBlock

# Words too common to say which tool a prompt wants.
_STOP_WORDS = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "for", "from", "get", "give"}
    | {"how", "i", "in", "is", "it", "me", "of", "on", "or", "please", "set", "show", "tell", "the"}
    | {"this", "to", "use", "what", "when", "where", "which", "who", "why", "with", "you", "your"}
)
_WORD = re.compile(r"[a-z0-9]+")
# Numbers joined by operators (at least one): "6 * (3 + 4)", not a lone "2026".
_EXPRESSION = re.compile(r"\(*-?\d+(?:\.\d+)?\)*(?:\s*[-+*/]\s*\(*-?\d+(?:\.\d+)?\)*)+")
_PLACE = re.compile(r"\bin ([A-Z][\w/-]*(?:[ ,]+[A-Z][\w/-]*)*)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP_WORDS and len(w) > 1}


def _tool_words(tool: Tool) -> set[str]:
    """The words that ask for ``tool``: its name's, and those of the usual example tools."""
    words = _words(tool.name.replace("_", " ").replace("-", " "))
    # A few words a prompt uses for what the usual example tools do.
    if words & {"time", "clock", "date"}:
        words |= {"time", "clock", "date", "now", "today", "hour"}
    if words & {"calculator", "calculate", "arithmetic", "math", "evaluate", "expression"}:
        words |= {"calculate", "compute", "math", "plus", "minus", "times", "sum", "evaluate"}
    return words


def choose_tool(request: GenerationRequest, prompt: str) -> Tool | None:
    """The tool to call for ``prompt``, or ``None`` to answer in words."""
    choice = request.tool_choice
    if not request.tools or (choice is not None and choice.type == "none"):
        return None
    if choice is not None and choice.type == "tool":
        return next(tool for tool in request.tools if tool.name == choice.name)
    asked = _words(prompt)
    if _EXPRESSION.search(prompt):
        asked |= {"calculate", "math"}
    # A word of the name counts twice as much as one of the description; one description word
    # alone ("current", "value") is too weak to call a tool unasked.
    scores = [
        (2 * len(asked & _tool_words(tool)) + len(asked & _words(tool.description or "")), -index)
        for index, tool in enumerate(request.tools)
    ]
    best, negative_index = max(scores)
    if best < 2 and (choice is None or choice.type == "auto"):
        return None
    return request.tools[-negative_index]


def arguments_for(tool: Tool, prompt: str) -> dict[str, Any]:
    """Arguments for ``tool`` that its input schema accepts, taken from ``prompt`` where it can."""
    value = _value(tool.input_schema, "", prompt, top=True)
    return value if isinstance(value, dict) else {}


def _value(schema: Any, name: str, prompt: str, *, top: bool = False) -> Any:
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        mentioned = [v for v in schema["enum"] if isinstance(v, str) and v.lower() in prompt.lower()]
        return mentioned[0] if mentioned else schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") or {}
        required = schema.get("required") or list(properties)
        return {
            key: _value(properties.get(key, {}), key, prompt) for key in properties if key in required or top
        }
    if kind == "array":
        item = _value(schema.get("items") or {"type": "string"}, name, prompt)
        return [item] * max(1, int(schema.get("minItems", 1)))
    if kind in ("number", "integer"):
        return _number(schema, prompt, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, name, prompt)


def _number(schema: dict[str, Any], prompt: str, *, integer: bool) -> int | float:
    found = _NUMBER.search(prompt)
    value: float = float(found[0]) if found else float(schema.get("minimum", 1))
    if "minimum" in schema:
        value = max(value, float(schema["minimum"]))
    if "maximum" in schema:
        value = min(value, float(schema["maximum"]))
    return int(value) if integer else value


def _string(schema: dict[str, Any], name: str, prompt: str) -> str:
    lowered = name.lower()
    if lowered in ("expression", "expr", "formula", "calculation", "input", "query") or "express" in lowered:
        match = _EXPRESSION.search(prompt)
        if match and lowered != "query":
            return match[0].strip()
    if any(word in lowered for word in ("zone", "city", "location", "place", "country", "region")):
        place = _PLACE.search(prompt)
        if place:
            return place[1].strip(" ,")
        return "UTC" if "zone" in lowered else "Paris"
    words = [w.strip(".,;:!?\"'()") for w in prompt.split() if not w.startswith("/")]
    text = " ".join(w for w in words if w)[:80] or "demo"
    limit = schema.get("maxLength")
    return text[: int(limit)] if isinstance(limit, int) and limit > 0 else text


def results_to_answer(request: GenerationRequest) -> list[tuple[str, ToolResultBlock]]:
    """The tool results the conversation ends with, each with the name of the tool that made it
    (empty when the conversation does not end with results)."""
    results: list[ToolResultBlock] = []
    for message in reversed(request.messages):
        if message.role != "tool":
            break
        results[:0] = [b for b in message.blocks if isinstance(b, ToolResultBlock)]
    names = {block.id: block.name for _, block in request.tool_uses()}
    return [(names.get(result.tool_use_id, "tool"), result) for result in results]


def answer_from_results(results: list[tuple[str, ToolResultBlock]]) -> str:
    """An answer in words that uses what the tools returned."""
    lines = []
    for name, result in results:
        text = result.text.strip() or "(nothing)"
        if result.is_error:
            lines.append(f"The `{name}` tool failed: {text}. I cannot answer that part without it.")
        else:
            lines.append(f"The `{name}` tool says: **{text}**.")
    if len(lines) == 1 and not results[0][1].is_error:
        return f"{lines[0]} That is the answer to your question."
    return "\n\n".join(["Here is what the tools returned:", *(f"- {line}" for line in lines)])
