"""Helpers the request mappers share: field checks that fail with a 400 naming the field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ssegate.errors import RequestError
from ssegate.request import GenerationRequest, parse_request


def gateway_request(native: dict[str, Any], *, max_tokens_limit: int) -> GenerationRequest:
    """The gateway's request from a dialect's body rewritten into ``POST /v1/generations``'s JSON:
    one validation for every door (a 400 names the field as the gateway's JSON names it)."""
    return parse_request(native, max_tokens_limit=max_tokens_limit)


@dataclass(frozen=True, slots=True)
class RequestShape:
    """Which top-level fields a dialect's request may carry.

    ``known``: honoured (or harmless); ``not_yet``: valid in the dialect but not carried by the
    gateway's request model yet; ``never``: valid in the dialect, never honoured here.
    """

    known: frozenset[str] | set[str]
    not_yet: frozenset[str] | set[str] = frozenset()
    never: frozenset[str] | set[str] = frozenset()


def invalid(field: str, message: str, *, code: str = "invalid_request") -> RequestError:
    return RequestError(400, code, message, extra={"field": field})


def unknown_fields(body: dict[str, Any], shape: RequestShape) -> None:
    allowed = set(shape.known) | set(shape.not_yet) | set(shape.never)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise invalid(unknown[0], f"unknown field {unknown[0]!r}", code="unknown_parameter")


def refuse_unsupported(body: dict[str, Any], shape: RequestShape) -> None:
    """400 for a parameter this server cannot honour (null counts as absent)."""
    for name in sorted(body):
        if body[name] is None:
            continue
        if name in shape.not_yet:
            raise invalid(name, f"{name!r} is not supported by ssegate yet", code="unsupported_parameter")
        if name in shape.never:
            raise invalid(name, f"{name!r} is not supported by ssegate", code="unsupported_parameter")


def optional(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    # bool is an int in Python; a max_tokens of true is still wrong.
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise invalid(name, f"{name} must be {_kind_name(kind)}")
    return value


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "a boolean", dict: "an object", list: "a list"}.get(
        kind, kind.__name__
    )


def join_text_parts(content: Any, where: str, *, part_type: str) -> str:
    """A message's content as one string: a string as it is, or a list of text parts joined
    (``part_type``: the dialect's name for a text part). Any other part is refused."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if not isinstance(content, list):
        raise invalid(where, "content must be a string or a list of content parts")
    texts = []
    for index, part in enumerate(content):
        if not isinstance(part, dict):
            raise invalid(f"{where}[{index}]", "each content part must be an object")
        kind = part.get("type")
        if kind != part_type:
            raise invalid(f"{where}[{index}].type", f"content parts of type {kind!r} are not supported here")
        text = part.get("text")
        if not isinstance(text, str):
            raise invalid(f"{where}[{index}].text", "a text part needs a string text")
        texts.append(text)
    return "".join(texts)
