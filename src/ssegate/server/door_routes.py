"""The front doors' routes: OpenAI Chat Completions, Anthropic Messages, the AI SDK's UI stream.

Every route starts or reads a generation through :mod:`ssegate.server.doors`; nothing here runs a
generation or holds its lifecycle. Each answer carries ``X-Generation-Id``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ssegate.dialects import ai_sdk_ui, anthropic_messages, openai_chat
from ssegate.dialects.answer import Answer
from ssegate.dialects.base import Cursor, EncoderFactory
from ssegate.errors import StreamExists
from ssegate.gateway import TERMINAL_STATES, is_generation_id
from ssegate.log.base import Retention
from ssegate.server.doors import (
    CollectedAnswer,
    DialectStream,
    Door,
    Started,
    generation_id_from,
    known_generation,
    models_list,
    resume_cursor,
    start_generation,
    state_of,
)
from ssegate.server.generations import start_status
from ssegate.server.http import read_json_body, wants_event_stream
from ssegate.server.limits import StreamTicket
from ssegate.server.state import AppState

_FROM_START = Cursor()


def _start_headers(started: Started) -> dict[str, str]:
    headers = {"x-generation-id": started.generation_id}
    if started.replayed:
        headers["idempotent-replayed"] = "true"
    return headers


def _cursor(request: Request, started: Started) -> Cursor:
    """Where a POST's stream starts: a retry of an earlier start resumes after its Last-Event-ID."""
    return resume_cursor(request) if started.replayed else _FROM_START


@dataclass(frozen=True, slots=True)
class Dialect:
    """How a door answers: streamed (the encoder, and the key its viewers share encodings under)
    or whole (``render(generation_id, answer)``; ``None``: this door always streams)."""

    door: Door
    key: str
    encoder: EncoderFactory
    render: Callable[[str, Answer], dict[str, Any]] | None = None


def _answer(
    app: AppState,
    dialect: Dialect,
    generation_id: str,
    ticket: StreamTicket | None,
    cursor: Cursor,
    headers: list[tuple[str, str]],
) -> Response:
    """The generation's answer in ``dialect``: its stream when it has a stream slot, else whole."""
    if ticket is not None:
        return DialectStream(  # type: ignore[return-value]
            app, dialect.door, generation_id, dialect.key, dialect.encoder, cursor, ticket, headers
        )
    assert dialect.render is not None
    render = partial(dialect.render, generation_id)
    return CollectedAnswer(app, dialect.door, generation_id, render, dict(headers))  # type: ignore[return-value]


# A door's request body, parsed in its dialect.
_Parsed = TypeVar("_Parsed", openai_chat.ChatRequest, anthropic_messages.MessagesRequest)


async def _post_answer(
    request: Request, parse: Callable[..., _Parsed], dialect_of: Callable[[_Parsed], Dialect]
) -> Response:
    """A door's POST: the body parsed in its dialect, the generation started (or, for a retry, the
    earlier attempt's found), and its answer in ``dialect_of(parsed)``."""
    app = state_of(request)
    body = await read_json_body(request, app.settings.max_body_bytes)
    parsed = parse(body, max_tokens_limit=app.settings.max_tokens)
    dialect = dialect_of(parsed)
    started = await start_generation(
        request,
        app,
        parsed.generation,
        parsed.provider,
        stream=parsed.stream,
        body=body,
        status_of=dialect.door.start_status,
    )
    headers = list(_start_headers(started).items())
    return _answer(app, dialect, started.generation_id, started.ticket, _cursor(request, started), headers)


async def _read_answer(request: Request, dialect: Dialect, id_param: str, id_prefix: str) -> Response:
    """A door's GET of a generation (its id in path parameter ``id_param``): with ``Accept:
    text/event-stream`` its events from ``Last-Event-ID`` on, else the whole answer (waiting for
    its end)."""
    app = state_of(request)
    generation_id = generation_id_from(request.path_params[id_param], id_prefix)
    await known_generation(request, app, generation_id)
    headers = [("x-generation-id", generation_id)]
    if not wants_event_stream(request):
        return _answer(app, dialect, generation_id, None, _FROM_START, headers)
    cursor = resume_cursor(request)  # before the slot: a bad Last-Event-ID takes none
    return _answer(app, dialect, generation_id, await app.open_stream(request), cursor, headers)


OPENAI = Door(
    name=openai_chat.NAME,
    error_body=openai_chat.error_body,
    error_event=openai_chat.error_chunk,
)


def _openai(include_usage: bool) -> Dialect:
    key = f"{openai_chat.NAME}+usage" if include_usage else openai_chat.NAME
    encoder = partial(openai_chat.ChunkEncoder, include_usage=include_usage)
    return Dialect(OPENAI, key, encoder, openai_chat.completion)


@OPENAI.endpoint
async def chat_completions(request: Request) -> Response:
    return await _post_answer(request, openai_chat.parse_request, lambda chat: _openai(chat.include_usage))


@OPENAI.endpoint
async def chat_completion(request: Request) -> Response:
    """``GET /v1/chat/completions/{id}``: the completion (waiting for its end), or with
    ``Accept: text/event-stream`` its chunks from ``Last-Event-ID`` on (``?include_usage=true``)."""
    include_usage = request.query_params.get("include_usage", "").lower() in ("1", "true")
    return await _read_answer(request, _openai(include_usage), "completion_id", openai_chat.ID_PREFIX)


@OPENAI.endpoint
async def models(request: Request) -> Response:
    app = state_of(request)
    app.authenticate(request, scope="generate")
    return JSONResponse(models_list(app))


ANTHROPIC = Door(
    name=anthropic_messages.NAME,
    error_body=anthropic_messages.error_body,
    error_event=anthropic_messages.error_event,
    error_status=anthropic_messages.error_status,
    # Anthropic says 529 for overloaded (its SDK raises OverloadedError).
    start_status=lambda code: 529 if code == "upstream_overloaded" else start_status(code),
)


_ANTHROPIC = Dialect(
    ANTHROPIC, anthropic_messages.NAME, anthropic_messages.EventEncoder, anthropic_messages.message
)


@ANTHROPIC.endpoint
async def messages(request: Request) -> Response:
    return await _post_answer(request, anthropic_messages.parse_request, lambda _parsed: _ANTHROPIC)


@ANTHROPIC.endpoint
async def message(request: Request) -> Response:
    """``GET /v1/messages/{id}``: the message (waiting for its end), or with
    ``Accept: text/event-stream`` its events from ``Last-Event-ID`` on."""
    return await _read_answer(request, _ANTHROPIC, "message_id", anthropic_messages.ID_PREFIX)


UI = Door(name=ai_sdk_ui.NAME, error_body=ai_sdk_ui.error_body, error_event=ai_sdk_ui.error_event)
_UI = Dialect(UI, ai_sdk_ui.NAME, ai_sdk_ui.ChunkEncoder)  # always streamed
_UI_HEADERS = [ai_sdk_ui.HEADER]
_CHAT_RETENTION_EVENTS = 1


def _chat_key(principal: str, chat_id: str) -> str:
    # Per principal: another key's chat of the same id is another chat.
    return f"uichat:{principal}:{chat_id}"


async def _remember_generation(app: AppState, principal: str, chat_id: str, generation_id: str) -> None:
    """The chat's active generation, for resume and stop (in the log, so every process knows it)."""
    key = _chat_key(principal, chat_id)
    retention = app.settings.generation_retention
    with contextlib.suppress(StreamExists):
        await app.log.create(key, Retention(_CHAT_RETENTION_EVENTS, retention.max_age))
    await app.log.set_meta(key, {"generation": generation_id})


async def _active_generation(request: Request, app: AppState, scope: str) -> str | None:
    """The chat's generation if it is still running (``None``: nothing to resume or stop)."""
    principal = app.authenticate(request, scope=scope)
    chat_id = ai_sdk_ui.check_chat_id(request.path_params["chat_id"], "chatId")
    generation_id = (await app.log.get_meta(_chat_key(principal, chat_id))).get("generation")
    if not generation_id or not is_generation_id(generation_id):
        return None
    described = await app.gateway.describe(generation_id)
    if described is None or described["state"] in TERMINAL_STATES:
        return None
    app.authorize_generation(request, described, scope=scope)
    return generation_id


@UI.endpoint
async def ui_chat(request: Request) -> Response:
    """``POST /v1/ui/chat``: what ``DefaultChatTransport.sendMessages`` sends."""
    app = state_of(request)
    body = await read_json_body(request, app.settings.max_body_bytes)
    chat = ai_sdk_ui.parse_request(body, max_tokens_limit=app.settings.max_tokens)
    started = await start_generation(
        request, app, chat.generation, chat.provider, stream=True, body=body, status_of=UI.start_status
    )
    generation_id, ticket = started.generation_id, started.ticket
    assert ticket is not None
    try:
        if not started.replayed:
            await _remember_generation(app, started.owner, chat.chat_id, generation_id)
    except BaseException:
        ticket.close()
        raise
    headers = [*_start_headers(started).items(), *_UI_HEADERS]
    return _answer(app, _UI, generation_id, ticket, _cursor(request, started), headers)


@UI.endpoint
async def ui_chat_stream(request: Request) -> Response:
    """``GET /v1/ui/chat/{chatId}/stream``: ``reconnectToStream`` (``useChat({resume: true})``).
    The running generation from its start (the AI SDK rebuilds the message from a replay), or
    from ``Last-Event-ID``; 204 when the chat has none running."""
    app = state_of(request)
    generation_id = await _active_generation(request, app, "subscribe")
    if generation_id is None:
        return Response(status_code=204)
    cursor = resume_cursor(request)
    headers = [("x-generation-id", generation_id), *_UI_HEADERS]
    return _answer(app, _UI, generation_id, await app.open_stream(request), cursor, headers)


@UI.endpoint
async def ui_chat_stop(request: Request) -> Response:
    """``POST /v1/ui/chat/{chatId}/stop``: cancel the chat's running generation (the upstream call
    is closed at once); its readers get ``abort``. 204 when none is running."""
    app = state_of(request)
    generation_id = await _active_generation(request, app, "generate")
    if generation_id is None:
        return Response(status_code=204)
    await app.gateway.cancel(generation_id, reason="stopped")
    described = await app.gateway.describe(generation_id)
    state = described["state"] if described else "cancelled"
    return JSONResponse({"id": generation_id, "state": state}, headers={"x-generation-id": generation_id})


# The routes whose answer is usually a held event stream: served on the short path (see
# ssegate.server.dispatch), as /v1/generations is.
stream_routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/chat/completions/{completion_id}", chat_completion, methods=["GET"]),
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/{message_id}", message, methods=["GET"]),
    Route("/v1/ui/chat", ui_chat, methods=["POST"]),
    Route("/v1/ui/chat/{chat_id}/stream", ui_chat_stream, methods=["GET"]),
]
routes = [
    *stream_routes,
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/ui/chat/{chat_id}/stop", ui_chat_stop, methods=["POST"]),
]
