"""The gateway's own request model: what ``POST /v1/generations`` takes, and what providers map.

One vendor-neutral shape for what the Anthropic Messages and OpenAI Chat Completions APIs have in
common and what chat and agent apps send: messages with the roles ``system``, ``user``,
``assistant`` and ``tool``; content as a string or a list of blocks (text, image, tool use, tool
result); tools with JSON-Schema input; tool choice; sampling parameters; stop sequences; opaque
metadata; thinking / reasoning settings. ``docs/requests.md`` describes the JSON.

:func:`parse_request` turns a decoded JSON body into a frozen :class:`GenerationRequest`, or
raises a 400 :class:`~ssegate.errors.RequestError` whose ``field`` names the exact place, e.g.
``messages[2].content[0].tool_use_id``. What a particular provider cannot honour is that
provider's ``check`` (a 400 naming the field and the provider), never silently dropped.

Pure: no IO, no vendor SDKs.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ssegate.errors import RequestError

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")
ToolChoiceType = Literal["auto", "none", "any", "tool"]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
REASONING_EFFORTS: tuple[ReasoningEffort, ...] = ("none", "minimal", "low", "medium", "high", "xhigh", "max")

# Both vendors' rule for function / tool names.
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# What both vendors take as an image, and how each format's bytes begin.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_DATA_URL = re.compile(r"^data:([^;,]+);base64,(.*)$", re.DOTALL)
MAX_STOP_SEQUENCES = 16
MAX_TOOLS = 128
MAX_METADATA_BYTES = 4096
DEFAULT_MAX_TOKENS = 1024


# -- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextBlock:
    text: str


@dataclass(frozen=True, slots=True)
class ImageBlock:
    """An image: inline (``media_type`` + base64 ``data``) or by ``url`` (http/https)."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None

    @property
    def data_url(self) -> str:
        """The image as one URL (``data:`` for an inline image), as OpenAI takes it."""
        return self.url if self.url is not None else f"data:{self.media_type};base64,{self.data}"


@dataclass(frozen=True, slots=True)
class ToolUseBlock:
    """A call the assistant made: its ``id`` is what the tool result answers."""

    id: str
    name: str
    input: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResultBlock:
    """What a tool returned for the call ``tool_use_id``."""

    tool_use_id: str
    content: str | tuple[TextBlock | ImageBlock, ...]
    is_error: bool = False

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(block.text for block in self.content if isinstance(block, TextBlock))


@dataclass(frozen=True, slots=True)
class ThinkingBlock:
    """An assistant's earlier thinking, with the provider's signature (sent back as it came, as
    Anthropic requires in a tool loop with thinking on)."""

    thinking: str
    signature: str


@dataclass(frozen=True, slots=True)
class RedactedThinkingBlock:
    """Thinking the provider sent encrypted, sent back as it came."""

    data: str


ContentBlock = TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str | tuple[ContentBlock, ...]

    @property
    def text(self) -> str:
        """The message's text (text blocks and tool results' text), for the demo and size limits."""
        if isinstance(self.content, str):
            return self.content
        parts: list[str] = []
        for block in self.content:
            if isinstance(block, TextBlock | ToolResultBlock):
                parts.append(block.text)
        return "".join(parts)

    @property
    def blocks(self) -> tuple[ContentBlock, ...]:
        """The content as blocks (a string is one text block)."""
        if isinstance(self.content, str):
            return (TextBlock(self.content),)
        return self.content


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    input_schema: Mapping[str, Any]
    description: str | None = None


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``auto`` (the model decides), ``none`` (no calls), ``any`` (at least one call; OpenAI's
    ``required``) or ``tool`` (the tool called ``name``)."""

    type: ToolChoiceType
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Thinking:
    """Extended thinking with a token budget (Anthropic)."""

    budget_tokens: int


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    messages: tuple[Message, ...]
    model: str | None = None
    system: str | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    # Opaque to the gateway: echoed in the ``start`` event and the generation's state, never sent upstream.
    metadata: Mapping[str, Any] | None = None
    thinking: Thinking | None = None
    reasoning_effort: ReasoningEffort | None = None

    def tool_uses(self) -> Iterator[tuple[str, ToolUseBlock]]:
        """Every tool call in the conversation, with its field path."""
        for m, message in enumerate(self.messages):
            if isinstance(message.content, tuple):
                for b, block in enumerate(message.content):
                    if isinstance(block, ToolUseBlock):
                        yield f"messages[{m}].content[{b}]", block


def prompt_chars(request: GenerationRequest) -> int:
    """Characters of the prompt's text: messages (text, tool inputs and results) and system.
    Images are bounded by the body's size instead."""
    size = len(request.system or "")
    for message in request.messages:
        size += len(message.text)
        if isinstance(message.content, tuple):
            for block in message.content:
                if isinstance(block, ToolUseBlock):
                    size += len(orjson.dumps(block.input))
    return size


# -- errors -------------------------------------------------------------------------------------


def invalid(field_path: str, message: str) -> RequestError:
    """A 400 naming the field that is wrong."""
    return RequestError(400, "invalid_request", f"{field_path}: {message}", extra={"field": field_path})


def unsupported(provider: str, field_path: str, message: str) -> RequestError:
    """A 400 for a valid request that ``provider`` cannot honour, naming the field and the provider."""
    return RequestError(
        400,
        "unsupported_by_provider",
        f"{field_path}: provider {provider!r} {message}",
        extra={"field": field_path, "provider": provider},
    )


# -- the parser ---------------------------------------------------------------------------------

REQUEST_FIELDS = frozenset(
    {
        "messages",
        "model",
        "system",
        "max_tokens",
        "tools",
        "tool_choice",
        "temperature",
        "top_p",
        "stop",
        "metadata",
        "thinking",
        "reasoning_effort",
    }
)


def parse_request(
    body: Any, *, max_tokens_limit: int, extra_fields: frozenset[str] = frozenset()
) -> GenerationRequest:
    """The :class:`GenerationRequest` a decoded JSON body describes; a 400 naming the field
    otherwise. ``extra_fields``: other top-level fields the caller reads itself (left alone)."""
    if not isinstance(body, dict):
        raise invalid("body", "the body must be a JSON object")
    allowed = REQUEST_FIELDS | extra_fields
    for name in body:
        if name not in allowed:
            raise invalid(name, f"unknown field; allowed: {', '.join(sorted(allowed))}")
    tools = _tools(body.get("tools"))
    messages = _messages(body.get("messages"))
    max_tokens = _optional_int(body, "max_tokens")
    if max_tokens is not None and not 1 <= max_tokens <= max_tokens_limit:
        raise invalid("max_tokens", f"must be between 1 and {max_tokens_limit}")
    request = GenerationRequest(
        messages=messages,
        model=_optional_str(body, "model") or None,
        system=_optional_str(body, "system") or None,
        max_tokens=max_tokens or DEFAULT_MAX_TOKENS,
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0),
        stop=_stop(body.get("stop")),
        metadata=_metadata(body.get("metadata")),
        thinking=_thinking(body.get("thinking")),
        reasoning_effort=_reasoning_effort(body.get("reasoning_effort")),
    )
    # Whatever else JSON carried that providers cannot send (lone surrogates, huge integers).
    _encoded_size(body, "body")
    return request


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid(name, f"must be a string, not {_type_name(value)}")
    return value


def _optional_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    # bool is an int in Python; a max_tokens of true is still wrong.
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise invalid(name, f"must be an integer, not {_type_name(value)}")
    return value


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise invalid(name, f"must be a number, not {_type_name(value)}")
    if not low <= value <= high:
        raise invalid(name, f"must be between {low:g} and {high:g}")
    return float(value)


def _messages(value: Any) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise invalid("messages", "must be a non-empty array of {role, content}")
    messages = tuple(_message(item, f"messages[{index}]") for index, item in enumerate(value))
    # Tool messages written in the short form name their call at messages[i].tool_use_id.
    short = {i for i, item in enumerate(value) if item.get("role") == "tool" and "tool_use_id" in item}
    _check_turns(messages, short)
    return messages


def _message(item: Any, path: str) -> Message:
    if not isinstance(item, dict):
        raise invalid(path, f"must be an object with role and content, not {_type_name(item)}")
    role = item.get("role")
    if role not in ROLES:
        raise invalid(f"{path}.role", f"must be one of {', '.join(ROLES)}, not {role!r}")
    allowed = {"role", "content"} | ({"tool_use_id", "is_error"} if role == "tool" else set())
    for name in item:
        if name not in allowed:
            raise invalid(
                f"{path}.{name}", f"unknown field; a {role} message has {', '.join(sorted(allowed))}"
            )
    content = item.get("content")
    if role == "tool" and "tool_use_id" in item:
        # The short form of one result: {"role": "tool", "tool_use_id", "content", "is_error"}.
        block = _tool_result({"type": "tool_result", **{k: v for k, v in item.items() if k != "role"}}, path)
        return Message("tool", (block,))
    if "is_error" in item:
        raise invalid(f"{path}.is_error", "is_error goes with tool_use_id (or in a tool_result block)")
    if isinstance(content, str):
        if role == "tool":
            raise invalid(f"{path}.content", "a tool message needs tool_use_id, or tool_result blocks")
        if not content.strip():
            raise invalid(f"{path}.content", "must not be empty")
        return Message(role, content)
    if not isinstance(content, list):
        raise invalid(f"{path}.content", f"must be a string or an array of blocks, not {_type_name(content)}")
    if not content:
        raise invalid(f"{path}.content", "must not be an empty array")
    blocks = tuple(_block(block, f"{path}.content[{index}]", role) for index, block in enumerate(content))
    return Message(role, blocks)


_BLOCK_TYPES = ("text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking")
# The blocks each role may carry.
_BLOCKS_BY_ROLE: dict[str, tuple[str, ...]] = {
    "system": ("text",),
    "user": ("text", "image"),
    "assistant": ("text", "tool_use", "thinking", "redacted_thinking"),
    "tool": ("tool_result",),
}


def _block(value: Any, path: str, role: str) -> ContentBlock:
    if not isinstance(value, dict):
        raise invalid(path, f"must be a block object with a type, not {_type_name(value)}")
    kind = value.get("type")
    allowed = _BLOCKS_BY_ROLE[role]
    if kind not in _BLOCK_TYPES:
        raise invalid(f"{path}.type", f"must be one of {', '.join(_BLOCK_TYPES)}, not {kind!r}")
    if kind not in allowed:
        raise invalid(f"{path}.type", f"a {role} message takes {' or '.join(allowed)} blocks, not {kind}")
    if kind == "text":
        return _text(value, path)
    if kind == "image":
        return _image(value, path)
    if kind == "tool_use":
        return _tool_use(value, path)
    if kind == "thinking":
        _only(value, path, ("type", "thinking", "signature"))
        return ThinkingBlock(_string_field(value, path, "thinking"), _string_field(value, path, "signature"))
    if kind == "redacted_thinking":
        _only(value, path, ("type", "data"))
        return RedactedThinkingBlock(_string_field(value, path, "data"))
    return _tool_result(value, path)


def _string_field(value: dict[str, Any], path: str, name: str) -> str:
    text = value.get(name)
    if not isinstance(text, str):
        raise invalid(f"{path}.{name}", f"must be a string, not {_type_name(text)}")
    return text


def _only(value: dict[str, Any], path: str, names: tuple[str, ...]) -> None:
    for name in value:
        if name not in names:
            raise invalid(f"{path}.{name}", f"unknown field; allowed: {', '.join(names)}")


def _text(value: dict[str, Any], path: str) -> TextBlock:
    _only(value, path, ("type", "text"))
    text = value.get("text")
    if not isinstance(text, str):
        raise invalid(f"{path}.text", f"must be a string, not {_type_name(text)}")
    if not text:
        raise invalid(f"{path}.text", "must not be empty")
    return TextBlock(text)


def _image(value: dict[str, Any], path: str) -> ImageBlock:
    _only(value, path, ("type", "source"))
    source = value.get("source")
    if not isinstance(source, dict):
        raise invalid(f"{path}.source", "must be {type: base64, media_type, data} or {type: url, url}")
    path = f"{path}.source"
    kind = source.get("type")
    if kind == "url":
        _only(source, path, ("type", "url"))
        url = source.get("url")
        if not isinstance(url, str):
            raise invalid(f"{path}.url", f"must be a string, not {_type_name(url)}")
        match = _DATA_URL.match(url)
        if match is not None:  # an inline image written as a data: URL
            return _inline_image(match[1], match[2], f"{path}.url", f"{path}.url")
        if not url.startswith(("https://", "http://")) or len(url) > 8192:
            raise invalid(f"{path}.url", "must be an http(s) URL or a data:image/...;base64 URL")
        return ImageBlock(url=url)
    if kind == "base64":
        _only(source, path, ("type", "media_type", "data"))
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str):
            raise invalid(f"{path}.media_type", f"must be a string, not {_type_name(media_type)}")
        if not isinstance(data, str):
            raise invalid(f"{path}.data", f"must be a string, not {_type_name(data)}")
        return _inline_image(media_type, data, f"{path}.media_type", f"{path}.data")
    raise invalid(f"{path}.type", f"must be base64 or url, not {kind!r}")


def _inline_image(media_type: str, data: str, type_path: str, data_path: str) -> ImageBlock:
    if media_type not in IMAGE_TYPES:
        raise invalid(type_path, f"must be one of {', '.join(IMAGE_TYPES)}, not {media_type!r}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(data_path, "is not valid base64") from None
    sniffed = sniff_image(raw)
    if sniffed is None:
        raise invalid(data_path, "is not an image (not PNG, JPEG, GIF or WebP data)")
    if sniffed != media_type:
        raise invalid(type_path, f"says {media_type} but the data is {sniffed}")
    return ImageBlock(media_type=media_type, data=data)


def sniff_image(raw: bytes) -> str | None:
    """The image type the bytes begin with, or ``None``."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if raw.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if raw.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "image/webp"
    return None


def _tool_use(value: dict[str, Any], path: str) -> ToolUseBlock:
    _only(value, path, ("type", "id", "name", "input"))
    tool_id = value.get("id")
    if not isinstance(tool_id, str) or not tool_id or len(tool_id) > 256:
        raise invalid(f"{path}.id", "must be a non-empty string (at most 256 characters)")
    name = value.get("name")
    if not isinstance(name, str) or not _TOOL_NAME.match(name):
        raise invalid(f"{path}.name", "must be 1-64 letters, digits, _ or -")
    arguments = value.get("input")
    if not isinstance(arguments, dict):
        raise invalid(f"{path}.input", f"must be a JSON object, not {_type_name(arguments)}")
    _encoded_size(arguments, f"{path}.input")
    return ToolUseBlock(tool_id, name, arguments)


def _tool_result(value: dict[str, Any], path: str) -> ToolResultBlock:
    _only(value, path, ("type", "tool_use_id", "content", "is_error"))
    tool_use_id = value.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise invalid(f"{path}.tool_use_id", "must be the id of the tool call this answers")
    is_error = value.get("is_error", False)
    if not isinstance(is_error, bool):
        raise invalid(f"{path}.is_error", f"must be a boolean, not {_type_name(is_error)}")
    content = value.get("content")
    if isinstance(content, str):
        return ToolResultBlock(tool_use_id, content, is_error)
    if not isinstance(content, list):
        raise invalid(f"{path}.content", f"must be a string or an array of blocks, not {_type_name(content)}")
    blocks: list[TextBlock | ImageBlock] = []
    for index, item in enumerate(content):
        block = _block(item, f"{path}.content[{index}]", "user")
        assert isinstance(block, TextBlock | ImageBlock)
        blocks.append(block)
    return ToolResultBlock(tool_use_id, tuple(blocks), is_error)


def _check_turns(messages: tuple[Message, ...], short: set[int]) -> None:
    """Tool calls and results pair up the way both vendors require: the messages right after an
    assistant message with tool calls are tool messages that answer every one of them (and only
    those); the conversation ends with the user's or the tools' turn."""
    pending: dict[str, str] = {}  # id -> path of the tool_use block still waiting for its result
    seen: set[str] = set()
    for m, message in enumerate(messages):
        blocks = message.content if isinstance(message.content, tuple) else ()
        if message.role != "tool" and pending:
            tool_id, where = next(iter(pending.items()))
            raise invalid(where, f"tool call {tool_id!r} has no tool_result in the tool message(s) after it")
        if message.role == "assistant":
            for b, block in enumerate(blocks):
                if isinstance(block, ToolUseBlock):
                    if block.id in seen:
                        raise invalid(
                            f"messages[{m}].content[{b}].id", f"tool call id {block.id!r} is used twice"
                        )
                    seen.add(block.id)
                    pending[block.id] = f"messages[{m}].content[{b}]"
        elif message.role == "tool":
            for b, block in enumerate(blocks):
                assert isinstance(block, ToolResultBlock)
                where = (
                    f"messages[{m}].tool_use_id" if m in short else f"messages[{m}].content[{b}].tool_use_id"
                )
                if pending.pop(block.tool_use_id, None) is None:
                    raise invalid(
                        where,
                        f"no tool call {block.tool_use_id!r} waits for a result here (a tool result "
                        "answers a tool_use of the assistant message just before it, once)",
                    )
    if pending:
        tool_id, where = next(iter(pending.items()))
        raise invalid(where, f"tool call {tool_id!r} has no tool_result after it")
    if messages[-1].role not in ("user", "tool"):
        raise invalid("messages", "the last message must be the user's (or tool results)")


def _tools(value: Any) -> tuple[Tool, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid(
            "tools", f"must be an array of {{name, description, input_schema}}, not {_type_name(value)}"
        )
    if len(value) > MAX_TOOLS:
        raise invalid("tools", f"at most {MAX_TOOLS} tools")
    tools: list[Tool] = []
    names: set[str] = set()
    for index, item in enumerate(value):
        path = f"tools[{index}]"
        if not isinstance(item, dict):
            raise invalid(path, f"must be an object, not {_type_name(item)}")
        _only(item, path, ("name", "description", "input_schema"))
        name = item.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise invalid(f"{path}.name", "must be 1-64 letters, digits, _ or -")
        if name in names:
            raise invalid(f"{path}.name", f"tool {name!r} is defined twice")
        names.add(name)
        description = item.get("description")
        if description is not None and not isinstance(description, str):
            raise invalid(f"{path}.description", f"must be a string, not {_type_name(description)}")
        schema = item.get("input_schema")
        if not isinstance(schema, dict):
            raise invalid(f"{path}.input_schema", f"must be a JSON Schema object, not {_type_name(schema)}")
        if schema.get("type") != "object":
            raise invalid(f"{path}.input_schema.type", 'must be "object" (a tool takes named arguments)')
        _encoded_size(schema, f"{path}.input_schema")
        tools.append(Tool(name, schema, description or None))
    return tuple(tools)


def _tool_choice(value: Any, tools: tuple[Tool, ...]) -> ToolChoice | None:
    if value is None:
        return None
    if isinstance(value, str):
        choice = ToolChoice("any") if value == "required" else None
        if value in ("auto", "none", "any"):
            choice = ToolChoice(value)  # type: ignore[arg-type]
        if choice is None:
            raise invalid(
                "tool_choice",
                f'must be "auto", "none", "any", "required" or {{"type": "tool", "name"}}, not {value!r}',
            )
    elif isinstance(value, dict):
        _only(value, "tool_choice", ("type", "name"))
        kind = value.get("type")
        if kind == "tool":
            name = value.get("name")
            if not isinstance(name, str):
                raise invalid("tool_choice.name", "must name one of the tools")
            if name not in {tool.name for tool in tools}:
                raise invalid("tool_choice.name", f"no tool called {name!r} in tools")
            choice = ToolChoice("tool", name)
        elif kind in ("auto", "none", "any", "required"):
            if "name" in value:
                raise invalid("tool_choice.name", "only a tool_choice of type tool names a tool")
            choice = ToolChoice("any" if kind == "required" else kind)
        else:
            raise invalid("tool_choice.type", f"must be auto, none, any, required or tool, not {kind!r}")
    else:
        raise invalid("tool_choice", f"must be a string or an object, not {_type_name(value)}")
    if not tools:
        raise invalid("tool_choice", "needs tools")
    return choice


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise invalid("stop", f"must be a string or an array of strings, not {_type_name(value)}")
    if len(items) > MAX_STOP_SEQUENCES:
        raise invalid("stop", f"at most {MAX_STOP_SEQUENCES} stop sequences")
    for index, item in enumerate(items):
        where = "stop" if isinstance(value, str) else f"stop[{index}]"
        if not isinstance(item, str):
            raise invalid(where, f"must be a string, not {_type_name(item)}")
        if not item:
            raise invalid(where, "must not be empty")
    return tuple(items)


def _encoded_size(value: Any, path: str) -> int:
    """Bytes of ``value`` as compact JSON; a 400 for what JSON can carry but the gateway cannot
    (integers past 64 bits: orjson's and most JSON parsers' limit)."""
    try:
        return len(orjson.dumps(value))
    except TypeError as exc:
        raise invalid(path, f"cannot be encoded: {exc}") from None


def _metadata(value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid("metadata", f"must be an object, not {_type_name(value)}")
    if _encoded_size(value, "metadata") > MAX_METADATA_BYTES:
        raise invalid("metadata", f"must be at most {MAX_METADATA_BYTES} bytes of JSON")
    return value


def _thinking(value: Any) -> Thinking | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid("thinking", f"must be an object {{budget_tokens}}, not {_type_name(value)}")
    _only(value, "thinking", ("type", "budget_tokens"))
    kind = value.get("type", "enabled")
    if kind == "disabled":
        return None
    if kind != "enabled":
        raise invalid("thinking.type", f"must be enabled or disabled, not {kind!r}")
    budget = value.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise invalid("thinking.budget_tokens", "must be a positive integer")
    return Thinking(budget)


def _reasoning_effort(value: Any) -> ReasoningEffort | None:
    if value is None:
        return None
    if value not in REASONING_EFFORTS:
        raise invalid("reasoning_effort", f"must be one of {', '.join(REASONING_EFFORTS)}, not {value!r}")
    return value  # type: ignore[no-any-return]


__all__ = [
    "ContentBlock",
    "GenerationRequest",
    "ImageBlock",
    "Message",
    "RedactedThinkingBlock",
    "TextBlock",
    "Thinking",
    "ThinkingBlock",
    "Tool",
    "ToolChoice",
    "ToolResultBlock",
    "ToolUseBlock",
    "invalid",
    "parse_request",
    "prompt_chars",
    "unsupported",
]
