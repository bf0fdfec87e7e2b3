"""Routes for /v1/topics: publish one event, subscribe to one topic or to several at once.

::

    POST /v1/topics/{topic}/events     {data, event?, id?} -> 201 {id, topic} (200 + duplicate: true
                                        when ``id``, an idempotency key, was already published)
    GET  /v1/topics/{topic}/events     SSE; ?history=N|all; Last-Event-ID resumes exactly
    GET  /v1/topics/events?topic=a&topic=b   SSE over several topics (compound ids)

``{topic}`` may contain ``/`` (``user/alice/jobs``). The rules live in :mod:`ssegate.topics`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ssegate.errors import RequestError
from ssegate.server.http import last_event_id, read_json_body
from ssegate.server.state import AppState
from ssegate.server.streaming import EventStreamResponse
from ssegate.topics import Published, ReservedEventType, TopicInputError, Topics, validate_topic

_PUBLISH_FIELDS = frozenset({"data", "event", "id"})


def topics_of(app: AppState) -> Topics:
    """The process's :class:`Topics` (made on first use: it only holds small caches)."""
    topics = app.extras.get("topics")
    if topics is None:
        topics = app.extras["topics"] = Topics(
            app.log, app.settings.topic_retention, outage=app.gateway.outage
        )
    assert isinstance(topics, Topics)
    return topics


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.ssegate
    return state


def _invalid(exc: TopicInputError, status: int = 422) -> RequestError:
    if isinstance(exc, ReservedEventType):
        return RequestError(400, "reserved_event_type", exc.message, extra={"field": exc.field})
    return RequestError(status, "invalid_request", exc.message, extra={"field": exc.field})


def parse_publish_body(body: Any) -> tuple[Any, str | None, str | None]:
    """``(data, event, key)`` from a publish body; a 422 naming the field otherwise."""
    if not isinstance(body, dict):
        raise _invalid(TopicInputError("body", "the body must be a JSON object {data, event?, id?}"))
    unknown = sorted(set(body) - _PUBLISH_FIELDS)
    if unknown:
        raise _invalid(TopicInputError(unknown[0], f"unknown field {unknown[0]!r}; allowed: data, event, id"))
    if "data" not in body:
        raise _invalid(TopicInputError("data", "data is required (any JSON value)"))
    event, key = body.get("event"), body.get("id")
    if event is not None and not isinstance(event, str):
        raise _invalid(TopicInputError("event", "event must be a string"))
    if key is not None and not isinstance(key, str):
        raise _invalid(TopicInputError("id", "id (an idempotency key) must be a string"))
    return body["data"], event, key


async def publish_event(request: Request) -> Response:
    app = _state(request)
    topic = _topic_from_path(request)
    # Publishing needs the publish scope (which may name topic patterns); a backend publishes to
    # users' private topics, so the read rule does not apply here.
    app.principal(request, scope="publish", topic=topic)
    data, event, key = parse_publish_body(await read_json_body(request, app.settings.max_body_bytes))
    try:
        published: Published = await topics_of(app).publish(topic, data, event=event, key=key)
    except TopicInputError as exc:
        raise _invalid(exc) from None
    body: dict[str, Any] = {"id": published.id, "topic": topic}
    if published.duplicate:
        return JSONResponse({**body, "duplicate": True}, status_code=200)
    return JSONResponse(body, status_code=201)


async def topic_events(request: Request) -> Response:
    return await _subscribe(request, [_topic_from_path(request)])


async def many_topic_events(request: Request) -> Response:
    names = request.query_params.getlist("topic")
    if not names:
        raise RequestError(
            400, "invalid_request", "name the topics: ?topic=a&topic=b", extra={"field": "topic"}
        )
    for name in names:
        _checked_topic(name)
    return await _subscribe(request, names)


async def _subscribe(request: Request, names: list[str]) -> Response:
    app = _state(request)
    for name in names:
        app.authorize_topic(request, name, scope="subscribe")  # 401/403; user/<p>/... is p's alone
    after = last_event_id(request)
    history = _history(request, app.settings.topic_retention.max_events)
    try:
        subscription = await topics_of(app).subscribe(names, last_event_id=after, history=history)
    except TopicInputError as exc:
        raise _invalid(exc, 400) from None
    return EventStreamResponse(  # type: ignore[return-value]
        subscription.chunks(keepalive=app.settings.keepalive_interval),
        retry_ms=app.settings.retry_ms,
        headers=[("x-topics", ",".join(subscription.topics))],
        ticket=await app.open_stream(request),
        fanout=app.fanout,
    )


def _history(request: Request, limit: int) -> int | None:
    raw = request.query_params.get("history", "0")
    if raw == "all":
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise RequestError(
            400, "invalid_request", "history is a number of events or 'all'", extra={"field": "history"}
        )
    return min(int(raw), limit)


def _checked_topic(name: str) -> str:
    try:
        return validate_topic(name)
    except TopicInputError as exc:
        raise _invalid(exc, 400) from None


def _topic_from_path(request: Request) -> str:
    return _checked_topic(request.path_params["topic"])


# The held streams (served on the short path, see ssegate._fast.stack).
stream_routes = [
    # Before the {topic:path} route, which would not match it anyway (it needs a "/" before "events").
    Route("/v1/topics/events", many_topic_events, methods=["GET"]),
    Route("/v1/topics/{topic:path}/events", topic_events, methods=["GET"]),
]
routes = [
    *stream_routes,
    Route("/v1/topics/{topic:path}/events", publish_event, methods=["POST"]),
]
