"""When a generation ends: hand the finished answer to the app (a callable) and/or a webhook.

Exactly once per generation, however it ended (``done``, ``error``, cancelled, abandoned, its
producer lost): the hook runs in the process whose terminal event landed in the log, and the log
takes exactly one terminal event per stream (an atomic append: a Lua script over Redis, a check in
memory). So a cancel sent to another process calls the hook there, and when a producer's process
is killed the process that notices (a viewer's, or one asked for the state: ``upstream_lost``)
calls it.

The finished generation is assembled from the log, so any process can build it: the text, the
thinking, the tool calls (name and input), the ``data`` events, usage, the finish reason or the
error, the app's metadata and the timings. A generation longer than the log's retention
(``SSEGATE_GENERATION_MAX_EVENTS``) has lost its start: ``complete`` is then false.

Limits: a process that dies after its terminal event landed but before its hook ran does not
call it (nothing else will either); a webhook gets a bounded number of attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import orjson

from ssegate.gateway import stream_key
from ssegate.log.base import EventLog

logger = logging.getLogger("ssegate.finish")

SIGNATURE_HEADER = "x-ssegate-signature"
TIMESTAMP_HEADER = "x-ssegate-timestamp"
DELIVERY_HEADER = "x-ssegate-delivery"
EVENT_HEADER = "x-ssegate-event"
# A receiver should refuse a signed body older than this (s): a replayed delivery.
DEFAULT_TOLERANCE = 300.0


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    id: str
    name: str
    # The call's input as a JSON object; None when the model's arguments were not one (then see
    # ``arguments``, the raw text).
    input: dict[str, Any] | None
    arguments: str


@dataclass(frozen=True, slots=True)
class FinishedGeneration:
    """A generation that has ended, as the on-finish hook and the webhook receive it."""

    id: str
    state: str  # done | error | cancelled
    finish_reason: str | None  # stop, length, tool_use, ..., cancelled; None after an error
    reason: str | None  # why a cancelled one was: cancelled, abandoned, shutdown
    error: dict[str, Any] | None  # {code, message, retryable} after an error
    text: str
    thinking: str
    tool_calls: list[ToolCallRecord]
    data: list[dict[str, Any]]  # the producer's data events, {name, value}
    usage: dict[str, Any] | None
    provider: str
    model: str
    owner: str
    metadata: dict[str, Any]
    created_at: float | None
    finished_at: float | None
    duration: float | None  # seconds from created to finished
    events: int  # events read from the log, the terminal one included
    complete: bool  # False: the log no longer had the generation's start (retention)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


OnFinish = Callable[[FinishedGeneration], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class Webhook:
    """Where to POST each finished generation. ``secret`` signs the body (HMAC-SHA256 of
    ``"<timestamp>.<body>"``, in ``X-Ssegate-Signature: sha256=<hex>``)."""

    url: str
    secret: str | None = None
    attempts: int = 5
    timeout: float = 10.0
    # First retry after this long (s); each next one waits twice as long, with jitter, at most max_delay.
    first_delay: float = 0.5
    max_delay: float = 30.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """For a webhook receiver: is this body signed with ``secret``, recently? (constant-time)"""
    if not timestamp or not signature:
        return False
    try:
        sent_at = float(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent_at) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


async def assemble(log: EventLog, generation_id: str) -> FinishedGeneration:
    """The finished generation as the log holds it (read in pages, whichever process asks)."""
    key = stream_key(generation_id)
    meta = await log.get_meta(key)
    text: list[str] = []
    thinking: list[str] = []
    calls: dict[str, dict[str, Any]] = {}
    data: list[dict[str, Any]] = []
    usage: dict[str, Any] | None = None
    terminal: tuple[str, dict[str, Any]] | None = None
    complete = True
    events = 0
    after: str | None = None
    while True:
        result = await log.read(key, after)
        if result.reset is not None or (
            after is None and result.entries and result.entries[0].event != "start"
        ):
            complete = False
        for entry in result.entries:
            events += 1
            payload = orjson.loads(entry.data) if entry.data else {}
            kind = entry.event
            if kind == "text":
                text.append(payload.get("delta", ""))
            elif kind == "thinking":
                thinking.append(payload.get("delta", ""))
            elif kind == "tool_call":
                _tool_call(calls, payload)
            elif kind == "data":
                data.append(payload)
            elif kind == "usage":
                usage = payload
            elif kind in ("done", "error"):
                terminal = (kind, payload)
        if result.closed or not result.entries:
            break
        after = result.entries[-1].id
    state = meta.get("state", "")
    kind, end = terminal if terminal is not None else ("", {})
    if kind == "done":
        usage = end.get("usage") or usage
    created = _float(meta.get("created_at"))
    finished = _float(meta.get("finished_at"))
    return FinishedGeneration(
        id=generation_id,
        state=state or ("error" if kind == "error" else "done"),
        finish_reason=end.get("finish_reason") if kind == "done" else None,
        reason=end.get("reason") if kind == "done" else None,
        error=end if kind == "error" else None,
        text="".join(text),
        thinking="".join(thinking),
        tool_calls=[_record(call_id, call) for call_id, call in calls.items()],
        data=data,
        usage=usage,
        provider=meta.get("provider", ""),
        model=meta.get("model", ""),
        owner=meta.get("owner", ""),
        metadata=orjson.loads(meta["metadata"]) if meta.get("metadata") else {},
        created_at=created,
        finished_at=finished,
        duration=round(finished - created, 3) if created is not None and finished is not None else None,
        events=events,
        complete=complete,
    )


def _tool_call(calls: dict[str, dict[str, Any]], payload: dict[str, Any]) -> None:
    call = calls.setdefault(str(payload.get("id", "")), {"name": "", "parts": [], "input": None})
    phase = payload.get("phase")
    if phase == "start":
        call["name"] = payload.get("name", "")
    elif phase == "delta":
        call["parts"].append(payload.get("delta", ""))
    elif phase == "end":
        call["name"] = payload.get("name") or call["name"]
        if isinstance(payload.get("input"), dict):
            call["input"] = payload["input"]


def _record(call_id: str, call: dict[str, Any]) -> ToolCallRecord:
    arguments = "".join(call["parts"])
    parsed = call["input"]
    if parsed is None:
        with contextlib.suppress(orjson.JSONDecodeError):
            loaded = orjson.loads(arguments) if arguments.strip() else {}
            parsed = loaded if isinstance(loaded, dict) else None
    return ToolCallRecord(id=call_id, name=call["name"], input=parsed, arguments=arguments)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


class FinishNotifier:
    """Runs the app's hooks and the webhook for each generation this process ended.

    :meth:`on_terminal` is the gateway's terminal callback (called once per generation, in the
    process that ended it); the work happens in a task of its own, so a slow hook or webhook never
    holds up the stream's end. :meth:`aclose` waits a bounded time for what is still running.
    """

    def __init__(
        self,
        log: EventLog,
        hooks: Sequence[OnFinish] = (),
        webhook: Webhook | None = None,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._log = log
        self._hooks = list(hooks)
        self._webhook = webhook
        self._client = client
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> bool:
        return bool(self._hooks) or self._webhook is not None

    def on_terminal(self, generation_id: str, state: str, data: dict[str, Any]) -> None:
        if not self.active:
            return
        task = asyncio.get_running_loop().create_task(
            self._deliver(generation_id), name=f"ssegate-finish-{generation_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, generation_id: str) -> None:
        try:
            finished = await assemble(self._log, generation_id)
        except Exception:
            logger.exception("generation %s: could not read it back for the on-finish hooks", generation_id)
            return
        for hook in self._hooks:
            try:
                result = hook(finished)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("generation %s: an on-finish hook failed", generation_id)
        if self._webhook is not None:
            await self._post(self._webhook, finished)

    async def _post(self, webhook: Webhook, finished: FinishedGeneration) -> None:
        body = orjson.dumps(finished.to_json())
        client = self._client or httpx.AsyncClient(timeout=webhook.timeout)
        try:
            delay = webhook.first_delay
            for attempt in range(1, webhook.attempts + 1):
                timestamp = str(int(time.time()))
                headers = {
                    "content-type": "application/json",
                    EVENT_HEADER: "generation.finished",
                    DELIVERY_HEADER: finished.id,  # the same on every attempt: receivers drop repeats
                    TIMESTAMP_HEADER: timestamp,
                }
                if webhook.secret:
                    headers[SIGNATURE_HEADER] = sign(webhook.secret, timestamp, body)
                try:
                    response = await client.post(webhook.url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}"
                else:
                    if response.status_code < 300:
                        return
                    if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                        logger.error(
                            "generation %s: the webhook refused it (%d); not retried",
                            finished.id,
                            response.status_code,
                        )
                        return
                    problem = f"HTTP {response.status_code}"
                if attempt == webhook.attempts:
                    logger.error(
                        "generation %s: the webhook failed %d times (last: %s); giving up",
                        finished.id,
                        attempt,
                        problem,
                    )
                    return
                logger.warning("generation %s: webhook attempt %d failed (%s)", finished.id, attempt, problem)
                await asyncio.sleep(delay * (0.5 + random.random()))  # jitter: not all at once
                delay = min(delay * 2, webhook.max_delay)
        finally:
            if self._client is None:
                await client.aclose()

    async def aclose(self, grace: float = 10.0) -> None:
        """Wait up to ``grace`` s for hooks and webhooks still running, then stop them."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(list(self._tasks), timeout=grace)
        for task in pending:
            logger.warning("%s: stopped at shutdown", task.get_name())
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
