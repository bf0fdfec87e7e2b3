"""The front doors' routes: OpenAI Chat Completions, Anthropic Messages, the AI SDK's UI stream.

Every route starts or reads a generation through :mod:`ssegate.server.doors`; nothing here runs a
generation or holds its lifecycle. Each answer carries ``X-Generation-Id``.
"""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ssegate.dialects import anthropic_messages, openai_chat
from ssegate.dialects.base import Cursor
from ssegate.server.doors import (
    CollectedAnswer,
    DialectStream,
    Door,
    generation_id_from,
    known_generation,
    models_list,
    resume_cursor,
    start_generation,
    state_of,
)
from ssegate.server.http import read_json_body, wants_event_stream

_FROM_START = Cursor()

OPENAI = Door(
    name=openai_chat.NAME,
    error_body=openai_chat.error_body,
    error_event=openai_chat.error_chunk,
)


def _openai_key(include_usage: bool) -> str:
    return f"{openai_chat.NAME}+usage" if include_usage else openai_chat.NAME


def _openai_encoder(include_usage: bool) -> partial[openai_chat.ChunkEncoder]:
    return partial(openai_chat.ChunkEncoder, include_usage=include_usage)


@OPENAI.endpoint
async def chat_completions(request: Request) -> Response:
    app = state_of(request)
    body = await read_json_body(request, app.settings.max_body_bytes)
    chat = openai_chat.parse_request(body, max_tokens_limit=app.settings.max_tokens)
    meta, ticket = await start_generation(request, app, chat.generation, chat.provider, stream=chat.stream)
    generation_id = meta["id"]
    headers = {"x-generation-id": generation_id}
    if ticket is not None:
        return DialectStream(  # type: ignore[return-value]
            app,
            OPENAI,
            generation_id,
            _openai_key(chat.include_usage),
            _openai_encoder(chat.include_usage),
            resume_cursor(request) if request.headers.get("last-event-id") else _FROM_START,
            ticket,
            list(headers.items()),
        )
    return CollectedAnswer(  # type: ignore[return-value]
        app, OPENAI, generation_id, partial(openai_chat.completion, generation_id), headers
    )


@OPENAI.endpoint
async def chat_completion(request: Request) -> Response:
    """``GET /v1/chat/completions/{id}``: the completion (waiting for its end), or with
    ``Accept: text/event-stream`` its chunks from ``Last-Event-ID`` on (``?include_usage=true``)."""
    app = state_of(request)
    generation_id = generation_id_from(request.path_params["completion_id"], openai_chat.ID_PREFIX)
    await known_generation(request, app, generation_id)
    headers = {"x-generation-id": generation_id}
    if wants_event_stream(request):
        include_usage = request.query_params.get("include_usage", "").lower() in ("1", "true")
        cursor = resume_cursor(request)
        ticket = app.open_stream(request)
        return DialectStream(  # type: ignore[return-value]
            app,
            OPENAI,
            generation_id,
            _openai_key(include_usage),
            _openai_encoder(include_usage),
            cursor,
            ticket,
            list(headers.items()),
        )
    return CollectedAnswer(  # type: ignore[return-value]
        app, OPENAI, generation_id, partial(openai_chat.completion, generation_id), headers
    )


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
)


@ANTHROPIC.endpoint
async def messages(request: Request) -> Response:
    app = state_of(request)
    body = await read_json_body(request, app.settings.max_body_bytes)
    parsed = anthropic_messages.parse_request(body, max_tokens_limit=app.settings.max_tokens)
    meta, ticket = await start_generation(
        request, app, parsed.generation, parsed.provider, stream=parsed.stream
    )
    generation_id = meta["id"]
    headers = {"x-generation-id": generation_id}
    if ticket is not None:
        return DialectStream(  # type: ignore[return-value]
            app,
            ANTHROPIC,
            generation_id,
            anthropic_messages.NAME,
            anthropic_messages.EventEncoder,
            _FROM_START,
            ticket,
            list(headers.items()),
        )
    return CollectedAnswer(  # type: ignore[return-value]
        app, ANTHROPIC, generation_id, partial(anthropic_messages.message, generation_id), headers
    )


@ANTHROPIC.endpoint
async def message(request: Request) -> Response:
    """``GET /v1/messages/{id}``: the message (waiting for its end), or with
    ``Accept: text/event-stream`` its events from ``Last-Event-ID`` on."""
    app = state_of(request)
    generation_id = generation_id_from(request.path_params["message_id"], anthropic_messages.ID_PREFIX)
    await known_generation(request, app, generation_id)
    headers = {"x-generation-id": generation_id}
    if wants_event_stream(request):
        cursor = resume_cursor(request)
        ticket = app.open_stream(request)
        return DialectStream(  # type: ignore[return-value]
            app,
            ANTHROPIC,
            generation_id,
            anthropic_messages.NAME,
            anthropic_messages.EventEncoder,
            cursor,
            ticket,
            list(headers.items()),
        )
    return CollectedAnswer(  # type: ignore[return-value]
        app, ANTHROPIC, generation_id, partial(anthropic_messages.message, generation_id), headers
    )


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/chat/completions/{completion_id}", chat_completion, methods=["GET"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/{message_id}", message, methods=["GET"]),
]
