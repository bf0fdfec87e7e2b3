"""The request model's parser: what it builds, and a 400 naming the field for everything wrong."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssegate.errors import RequestError
from ssegate.request import (
    GenerationRequest,
    ImageBlock,
    Message,
    RedactedThinkingBlock,
    TextBlock,
    Thinking,
    ThinkingBlock,
    Tool,
    ToolChoice,
    ToolResultBlock,
    ToolUseBlock,
    parse_request,
    prompt_chars,
    sniff_image,
)

# The smallest real images of each kind (headers are what the sniffer reads).
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
GIF = base64.b64encode(b"GIF89a" + b"\x00" * 8).decode()
CLOCK = {
    "name": "get_time",
    "description": "The current time in a time zone",
    "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
}


def full_body() -> dict[str, Any]:
    """A request using every field: a tool loop with an image, as an agent app sends it."""
    return {
        "model": "m-1",
        "system": "Be brief.",
        "max_tokens": 200,
        "messages": [
            {"role": "system", "content": "Answer in English."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What time is it in Paris? And what is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "get_time",
                        "input": {"zone": "Europe/Paris"},
                    },
                    {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {"zone": "UTC"}},
                ],
            },
            {
                "role": "tool",
                "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "12:00"}],
            },
            {"role": "tool", "tool_use_id": "call_2", "content": "no clock", "is_error": True},
        ],
        "tools": [CLOCK],
        "tool_choice": {"type": "tool", "name": "get_time"},
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
        "metadata": {"conversation": "c-42", "user": {"tier": "pro"}},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "reasoning_effort": "low",
    }


def test_a_full_request_parses_into_the_model() -> None:
    request = parse_request(full_body(), max_tokens_limit=4096)

    assert request.model == "m-1"
    assert request.system == "Be brief."
    assert request.max_tokens == 200
    assert request.messages[0] == Message("system", "Answer in English.")
    user = request.messages[1]
    assert user.content == (
        TextBlock("What time is it in Paris? And what is this?"),
        ImageBlock(media_type="image/png", data=PNG),
        ImageBlock(url="https://example.com/cat.jpg"),
    )
    assert request.messages[2].content[1] == ToolUseBlock("call_1", "get_time", {"zone": "Europe/Paris"})
    assert request.messages[3].content == (ToolResultBlock("call_1", "12:00"),)
    # The short form of a tool message is the same model.
    assert request.messages[4] == Message("tool", (ToolResultBlock("call_2", "no clock", is_error=True),))
    assert request.tools == (Tool("get_time", CLOCK["input_schema"], CLOCK["description"]),)
    assert request.tool_choice == ToolChoice("tool", "get_time")
    assert (request.temperature, request.top_p, request.stop) == (0.5, 0.9, ("END",))
    assert request.metadata == {"conversation": "c-42", "user": {"tier": "pro"}}
    assert request.thinking == Thinking(2048)
    assert request.reasoning_effort == "low"


def test_the_simple_request_still_works() -> None:
    request = parse_request({"messages": [{"role": "user", "content": "hi"}]}, max_tokens_limit=4096)
    assert request == GenerationRequest(messages=(Message("user", "hi"),))


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", ToolChoice("auto")),
        ("none", ToolChoice("none")),
        ("any", ToolChoice("any")),
        ("required", ToolChoice("any")),
        ({"type": "required"}, ToolChoice("any")),
        ({"type": "tool", "name": "get_time"}, ToolChoice("tool", "get_time")),
    ],
)
def test_tool_choice_forms(choice: Any, expected: ToolChoice) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": [CLOCK], "tool_choice": choice}
    assert parse_request(body, max_tokens_limit=10).tool_choice == expected


def test_an_image_as_a_data_url_is_an_inline_image() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "url", "url": f"data:image/gif;base64,{GIF}"}}
                ],
            }
        ]
    }
    request = parse_request(body, max_tokens_limit=10)
    assert request.messages[0].content == (ImageBlock(media_type="image/gif", data=GIF),)


def test_prompt_size_counts_text_tool_inputs_and_results_not_images() -> None:
    request = parse_request(full_body(), max_tokens_limit=4096)
    text = (
        "Be brief." + "Answer in English." + "What time is it in Paris? And what is this?" + "Let me check."
    )
    inputs = len('{"zone":"Europe/Paris"}') + len('{"zone":"UTC"}')
    assert prompt_chars(request) == len(text) + inputs + len("12:00") + len("no clock")


def _set(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``body`` with the value at a dotted/indexed path replaced (``...=DELETE`` removes it)."""
    body = copy.deepcopy(body)
    parts = path.replace("]", "").replace("[", ".").split(".")
    target: Any = body
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    last = parts[-1]
    key: Any = int(last) if last.isdigit() else last
    if value is DELETE:
        del target[key]
    else:
        target[key] = value
    return body


DELETE = object()

# (where to change the full body, the wrong value, the field the 400 names)
WRONG = [
    ("messages", "hi", "messages"),
    ("messages", [], "messages"),
    ("messages[1]", "hi", "messages[1]"),
    ("messages[1].role", "wizard", "messages[1].role"),
    ("messages[1].role", 5, "messages[1].role"),
    ("messages[1].content", 5, "messages[1].content"),
    ("messages[1].content", "  ", "messages[1].content"),
    ("messages[1].content", [], "messages[1].content"),
    ("messages[1].colour", "red", "messages[1].colour"),
    ("messages[1].content[0]", "text", "messages[1].content[0]"),
    ("messages[1].content[0].type", "video", "messages[1].content[0].type"),
    ("messages[1].content[0].type", "tool_use", "messages[1].content[0].type"),
    ("messages[1].content[0].text", 7, "messages[1].content[0].text"),
    ("messages[1].content[0].text", "", "messages[1].content[0].text"),
    ("messages[1].content[0].extra", 1, "messages[1].content[0].extra"),
    ("messages[1].content[1].source", "png", "messages[1].content[1].source"),
    ("messages[1].content[1].source.type", "file", "messages[1].content[1].source.type"),
    ("messages[1].content[1].source.media_type", "image/bmp", "messages[1].content[1].source.media_type"),
    ("messages[1].content[1].source.media_type", 3, "messages[1].content[1].source.media_type"),
    ("messages[1].content[1].source.media_type", "image/jpeg", "messages[1].content[1].source.media_type"),
    ("messages[1].content[1].source.data", "not base64!", "messages[1].content[1].source.data"),
    (
        "messages[1].content[1].source.data",
        base64.b64encode(b"hello").decode(),
        "messages[1].content[1].source.data",
    ),
    ("messages[1].content[1].source.data", None, "messages[1].content[1].source.data"),
    ("messages[1].content[2].source.url", "ftp://x/cat.jpg", "messages[1].content[2].source.url"),
    ("messages[1].content[2].source.url", "data:text/plain;base64,aGk=", "messages[1].content[2].source.url"),
    ("messages[1].content[2].source.url", 9, "messages[1].content[2].source.url"),
    ("messages[2].content[0].type", "image", "messages[2].content[0].type"),
    ("messages[2].content[1].id", "", "messages[2].content[1].id"),
    ("messages[2].content[1].id", 1, "messages[2].content[1].id"),
    ("messages[2].content[1].name", "get time", "messages[2].content[1].name"),
    ("messages[2].content[1].input", "{}", "messages[2].content[1].input"),
    ("messages[2].content[2].id", "call_1", "messages[2].content[2].id"),
    ("messages[3].content", "12:00", "messages[3].content"),
    ("messages[3].content[0].type", "text", "messages[3].content[0].type"),
    ("messages[3].content[0].tool_use_id", "call_9", "messages[3].content[0].tool_use_id"),
    ("messages[3].content[0].tool_use_id", 5, "messages[3].content[0].tool_use_id"),
    ("messages[3].content[0].is_error", "no", "messages[3].content[0].is_error"),
    ("messages[3].content[0].content", 12, "messages[3].content[0].content"),
    ("messages[3].content[0].content", [{"type": "tool_use"}], "messages[3].content[0].content[0].type"),
    ("messages[4].tool_use_id", "call_1", "messages[4].tool_use_id"),
    ("messages[4].is_error", 1, "messages[4].is_error"),
    ("system", 5, "system"),
    ("model", ["m"], "model"),
    ("max_tokens", "many", "max_tokens"),
    ("max_tokens", True, "max_tokens"),
    ("max_tokens", 0, "max_tokens"),
    ("max_tokens", 5000, "max_tokens"),
    ("tools", {"name": "x"}, "tools"),
    ("tools[0]", "get_time", "tools[0]"),
    ("tools[0].name", "get time", "tools[0].name"),
    ("tools[0].description", 5, "tools[0].description"),
    ("tools[0].input_schema", "object", "tools[0].input_schema"),
    ("tools[0].input_schema.type", "string", "tools[0].input_schema.type"),
    ("tools[0].parameters", {}, "tools[0].parameters"),
    ("tool_choice", "sometimes", "tool_choice"),
    ("tool_choice", 1, "tool_choice"),
    ("tool_choice.type", "function", "tool_choice.type"),
    ("tool_choice.name", "get_weather", "tool_choice.name"),
    ("temperature", "hot", "temperature"),
    ("temperature", True, "temperature"),
    ("temperature", 3, "temperature"),
    ("top_p", 1.5, "top_p"),
    ("top_p", "0.5", "top_p"),
    ("stop", 5, "stop"),
    ("stop", [""], "stop[0]"),
    ("stop", ["a", 3], "stop[1]"),
    ("stop", ["s"] * 17, "stop"),
    ("metadata", "c-42", "metadata"),
    ("metadata", {"blob": "x" * 5000}, "metadata"),
    ("thinking", 2048, "thinking"),
    ("thinking.budget_tokens", "lots", "thinking.budget_tokens"),
    ("thinking.budget_tokens", 0, "thinking.budget_tokens"),
    ("thinking.type", "sometimes", "thinking.type"),
    ("reasoning_effort", "extreme", "reasoning_effort"),
    ("reasoning_effort", 2, "reasoning_effort"),
    ("colour", "red", "colour"),
]


@pytest.mark.parametrize(("path", "value", "field"), WRONG, ids=[f"{p}={v!r}"[:60] for p, v, _ in WRONG])
def test_every_wrong_field_is_a_400_naming_it(path: str, value: Any, field: str) -> None:
    with pytest.raises(RequestError) as refused:
        parse_request(_set(full_body(), path, value), max_tokens_limit=4096)
    assert refused.value.status_code == 400
    assert refused.value.code == "invalid_request"
    assert refused.value.extra["field"] == field
    assert refused.value.message.startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        # A tool result with no call before it.
        ([{"role": "user", "content": "hi"}, {"role": "tool", "tool_use_id": "call_1", "content": "x"}],
         "messages[1].tool_use_id"),
        # A call with no result after it, before the next user turn.
        ([{"role": "user", "content": "hi"},
          {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "t", "input": {}}]},
          {"role": "user", "content": "well?"}], "messages[1].content[0]"),
        # One of two parallel calls answered, the conversation ends there.
        ([{"role": "user", "content": "hi"},
          {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "t", "input": {}},
                                            {"type": "tool_use", "id": "c2", "name": "t", "input": {}}]},
          {"role": "tool", "tool_use_id": "c1", "content": "x"}], "messages[1].content[1]"),
        # The same call answered twice.
        ([{"role": "user", "content": "hi"},
          {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "t", "input": {}}]},
          {"role": "tool", "tool_use_id": "c1", "content": "x"},
          {"role": "tool", "tool_use_id": "c1", "content": "y"}], "messages[3].tool_use_id"),
        # A result for a call of an earlier turn, not the one just before.
        ([{"role": "user", "content": "hi"},
          {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "t", "input": {}}]},
          {"role": "tool", "tool_use_id": "c1", "content": "x"},
          {"role": "assistant", "content": "done"},
          {"role": "user", "content": "again"},
          {"role": "tool", "tool_use_id": "c1", "content": "x"}], "messages[5].tool_use_id"),
        # The conversation must end with the user's (or the tools') turn.
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "messages"),
        # A tool message needs to say which call it answers.
        ([{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}], "messages[1].content"),
    ],
)  # fmt: skip
def test_tool_calls_and_results_must_pair_up(messages: list[dict[str, Any]], field: str) -> None:
    with pytest.raises(RequestError) as refused:
        parse_request({"messages": messages}, max_tokens_limit=100)
    assert refused.value.status_code == 400
    assert refused.value.extra["field"] == field


def test_the_sniffer_knows_the_four_image_types() -> None:
    assert sniff_image(base64.b64decode(PNG)) == "image/png"
    assert sniff_image(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff_image(base64.b64decode(GIF)) == "image/gif"
    assert sniff_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_image(b"<svg xmlns=...>") is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def _mutations(body: dict[str, Any]) -> list[str]:
    """Every path in ``body`` (a mutation target)."""
    paths: list[str] = []

    def walk(value: Any, path: str) -> None:
        if path:
            paths.append(path)
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else key)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")

    walk(body, "")
    return paths


PATHS = _mutations(full_body())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), value=JSON)
def test_any_value_anywhere_parses_or_is_a_400_naming_a_field(path: str, value: Any) -> None:
    body = _set(full_body(), path, value)
    refused: RequestError | None = None
    try:
        request = parse_request(body, max_tokens_limit=4096)
    except RequestError as exc:
        refused = exc
    if refused is None:
        assert isinstance(request, GenerationRequest)
        json.dumps(request.metadata)  # still JSON
        return
    assert refused.status_code == 400
    field = refused.extra["field"]
    assert refused.message.startswith(f"{field}: ")
    # The field named is where the body was changed, or inside it, or what pairs with it (tool
    # calls and results, tool_choice and tools), or the whole list it sits in.
    root = path.split(".")[0].split("[")[0]
    assert field.split(".")[0].split("[")[0] in {root, "messages", "tools", "tool_choice"}, (path, field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"messages": [{"role": "user", "content": "a \\ud800 lone surrogate"}]}', "body"),
        ('{"messages": [{"role": "user", "content": "hi"}], "metadata": {"n": 1e400}}', None),
        (
            '{"messages": [{"role": "user", "content": "hi"}], "metadata": {"n": 99999999999999999999}}',
            "metadata",
        ),
    ],
)
def test_json_the_providers_cannot_send_is_a_400(body: str, field: str | None) -> None:
    if field is None:  # infinity becomes null on the way out: harmless
        parse_request(json.loads(body), max_tokens_limit=10)
        return
    with pytest.raises(RequestError) as refused:
        parse_request(json.loads(body), max_tokens_limit=10)
    assert refused.value.extra["field"] == field


def test_an_assistants_signed_thinking_is_carried_and_checked() -> None:
    body = full_body()
    body["messages"][2]["content"].insert(0, {"type": "thinking", "thinking": "Hm.", "signature": "sig=="})
    body["messages"][2]["content"].insert(1, {"type": "redacted_thinking", "data": "opaque"})
    request = parse_request(body, max_tokens_limit=4096)
    assert request.messages[2].content[:2] == (ThinkingBlock("Hm.", "sig=="), RedactedThinkingBlock("opaque"))
    for path, value in (("signature", 5), ("thinking", None), ("colour", "red")):
        wrong = copy.deepcopy(body)
        wrong["messages"][2]["content"][0][path] = value
        with pytest.raises(RequestError) as refused:
            parse_request(wrong, max_tokens_limit=4096)
        assert refused.value.extra["field"] == f"messages[2].content[0].{path}"
    # Only an assistant's turn carries thinking.
    user = copy.deepcopy(body)
    user["messages"][1]["content"].append({"type": "thinking", "thinking": "x", "signature": "y"})
    with pytest.raises(RequestError) as refused:
        parse_request(user, max_tokens_limit=4096)
    assert refused.value.extra["field"] == "messages[1].content[3].type"
