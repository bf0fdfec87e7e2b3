"""The offline demo model: deterministic markdown, paced like a real model, no network, no key.

The answer depends only on the last user message (a hash seeds the choices), so a test or a demo
gets the same text twice. Slash words in that message ask for the cases a front end must handle:

==============  ===================================================================
``/think``      thinking deltas before the answer
``/tool``       a tool call (start, partial JSON deltas, end), finish reason ``tool_use``
``/error``      ``upstream_overloaded`` (retryable) after some text
``/error-auth`` ``upstream_auth`` before any text
``/xss``        an answer full of hostile HTML and markdown (for sanitiser tests)
``/long``       about 500 tokens
``/slow``       a fifth of the usual pace
==============  ===================================================================

Like a real model it stops at the request's ``max_tokens`` (thinking included), finish reason
``length``, and at a ``stop`` sequence; ``thinking`` or a ``reasoning_effort`` make it think.

Given ``tools`` (see :mod:`ssegate.providers.demo_tools`), a prompt that asks for one is answered
with a call whose arguments fit the tool's schema (finish reason ``tool_use``); a conversation
that ends with tool results is answered with what they returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import AsyncIterator
from typing import Any

from ssegate.providers.base import (
    Finished,
    GenerationRequest,
    ModelInfo,
    ProviderEvent,
    ProviderInfo,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UpstreamError,
    Usage,
)
from ssegate.providers.demo_tools import answer_from_results, arguments_for, choose_tool, results_to_answer

MODEL = "demo-1"
COMMANDS = frozenset({"/think", "/tool", "/error", "/error-auth", "/xss", "/long", "/slow"})
LONG_ANSWER_TOKENS = 500
SLOW_FACTOR = 5.0
# A "token" is a word with the whitespace before it: close to what real models stream.
_TOKEN = re.compile(r"\s*\S+|\s+")
# Roughly 4 characters per token, the usual rule of thumb for English text.
_CHARS_PER_TOKEN = 4

_SUBJECTS = ("streams", "events", "viewers", "cursors", "proxies", "gateways", "reconnects", "tokens")
_VERBS = ("carry", "resume", "replay", "deliver", "buffer", "order", "encode", "share")
_OBJECTS = (
    "every delta once",
    "the last event id",
    "a bounded history",
    "one write per wake-up",
    "the whole answer",
    "nothing twice",
)
_ADVERBS = ("quietly", "in order", "without loss", "at once", "cheaply", "in one pass")
_HEADINGS = ("In practice", "Why it works", "Edge cases", "Trade-offs", "Next steps", "Details")
_XSS_ANSWER = """## Hostile output test

This answer is **meant** to be hostile: a safe renderer shows it as text.

<img src=x onerror=alert(1)>

<script>alert(1)</script>

A [click](javascript:alert(1)) link and a [data link](data:text/html;base64,PHNjcmlwdD4=).

<iframe src="javascript:alert(1)"></iframe>

<b onclick="alert(1)">bold with a handler</b> and <a href="javascript:alert(1)">an anchor</a>.

![image](javascript:alert(1)) <svg onload=alert(1)></svg> <style>body{display:none}</style>

```html
<script>alert("inside a code block is fine")</script>
```
"""


class DemoProvider:
    """Deterministic markdown answers at a configurable pace (``tokens_per_second=0``: no pacing)."""

    def __init__(
        self, *, ttft: float = 0.4, tokens_per_second: float = 40.0, answer_tokens: int = 120
    ) -> None:
        self.info = ProviderInfo(name="demo", default_model=MODEL, models=(MODEL,))
        self.ttft = ttft
        self.tokens_per_second = tokens_per_second
        self.answer_tokens = answer_tokens

    async def aclose(self) -> None:
        return None

    async def stream(self, request: GenerationRequest) -> AsyncIterator[ProviderEvent]:
        prompt = last_user_message(request)
        commands = slash_commands(prompt)
        rng = random.Random(hashlib.sha256(prompt.encode()).digest())
        slow = SLOW_FACTOR if "/slow" in commands else 1.0
        pace = _Pace(self.ttft * slow, self.tokens_per_second / slow)
        await pace.first_token()
        if "/error-auth" in commands:
            raise UpstreamError(
                "upstream_auth", "demo: invalid API key (/error-auth)", retryable=False, status=401
            )
        yield ModelInfo(MODEL)
        input_tokens = estimate_tokens(request)
        output_tokens = 0
        thinks = "/think" in commands or request.thinking is not None
        if thinks or request.reasoning_effort not in (None, "none"):
            for token in tokenize(thinking_text(prompt, rng)):
                if output_tokens == request.max_tokens:
                    break  # thinking counts against max_tokens, as with the real API
                await pace.next_token()
                output_tokens += 1
                yield ThinkingDelta(token)
        results = results_to_answer(request)
        tool = None if results or "/tool" in commands else choose_tool(request, prompt)
        length = LONG_ANSWER_TOKENS if "/long" in commands else self.answer_tokens
        if results:
            text = answer_from_results(results)
        elif tool is not None:
            text = f"I will use the `{tool.name}` tool for that."
        else:
            text = _XSS_ANSWER if "/xss" in commands else answer_markdown(prompt, rng, length)
        text, stopped = _cut_at_stop(text, request.stop)
        tokens = tokenize(text)
        if "/tool" in commands:
            tokens = tokenize("I will look that up first.")
        elif "/error" in commands:
            tokens = tokens[: max(1, len(tokens) // 2)]
        for token in tokens:
            if output_tokens == request.max_tokens:
                yield Usage(input_tokens, output_tokens)
                yield Finished("length", MODEL)
                return
            await pace.next_token()
            output_tokens += 1
            yield TextDelta(token)
        if "/error" in commands:
            raise UpstreamError("upstream_overloaded", "demo: overloaded_error (/error)", retryable=True)
        if not stopped and ("/tool" in commands or tool is not None):
            name, arguments = (
                ("search", {"query": topic_of(prompt), "limit": 3})
                if tool is None
                else (tool.name, arguments_for(tool, prompt))
            )
            async for event in _tool_call(prompt, name, arguments, pace):
                output_tokens += 1
                yield event
            yield Usage(input_tokens, output_tokens)
            yield Finished("tool_use", MODEL)
            return
        yield Usage(input_tokens, output_tokens)
        yield Finished("stop", MODEL)


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to the first stop sequence in it (which is not sent, as with the real APIs)."""
    cuts = [index for index in (text.find(sequence) for sequence in stop) if index >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


class _Pace:
    """Sleeps to a schedule (start + ttft + n / rate), so slow consumers do not slow the model down."""

    __slots__ = ("_interval", "_loop", "_next", "_ttft")

    def __init__(self, ttft: float, tokens_per_second: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._ttft = ttft
        self._interval = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0
        self._next = 0.0

    async def first_token(self) -> None:
        self._next = self._loop.time() + self._ttft
        if self._ttft > 0:
            await asyncio.sleep(self._ttft)

    async def next_token(self) -> None:
        if self._interval == 0.0:
            return
        delay = self._next - self._loop.time()
        self._next += self._interval
        if delay > 0:
            await asyncio.sleep(delay)


async def _tool_call(
    prompt: str, name: str, input_: dict[str, Any], pace: _Pace
) -> AsyncIterator[ProviderEvent]:
    digest = hashlib.sha256(f"{name}\n{prompt}".encode()).hexdigest()
    tool_id = f"toolu_demo_{digest[:12]}"
    arguments = json.dumps(input_)
    yield ToolCallStart(tool_id, name, 0)
    step = max(1, len(arguments) // 5)
    for start in range(0, len(arguments), step):
        await pace.next_token()
        yield ToolCallDelta(tool_id, arguments[start : start + step])
    yield ToolCallEnd(tool_id)


def last_user_message(request: GenerationRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return message.text
    return ""


def slash_commands(prompt: str) -> frozenset[str]:
    return frozenset(word for word in prompt.split() if word in COMMANDS)


def topic_of(prompt: str) -> str:
    words = [w.strip(".,;:!?\"'()") for w in prompt.split() if w not in COMMANDS]
    words = [w for w in words if w]
    return " ".join(words[:6]) or "server-sent events"


def estimate_tokens(request: GenerationRequest) -> int:
    chars = sum(len(m.text) for m in request.messages) + len(request.system or "")
    return max(1, chars // _CHARS_PER_TOKEN)


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def thinking_text(prompt: str, rng: random.Random) -> str:
    topic = topic_of(prompt)
    return (
        f"The question is about {topic}. I should {rng.choice(_VERBS)} the key points first, "
        f"then show an example, and keep the answer short and {rng.choice(_ADVERBS)}."
    )


def _sentence(rng: random.Random) -> str:
    subject = rng.choice(_SUBJECTS)
    words = (rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_ADVERBS))
    return f"{subject[0].upper()}{subject[1:]} {' '.join(words)}."


def answer_markdown(prompt: str, rng: random.Random, target_tokens: int) -> str:
    """Markdown of about ``target_tokens`` tokens, cut at a block boundary so it always renders.

    At most one code block, table and quote each (chosen by the seed), then lists and paragraphs.
    """
    topic = topic_of(prompt)
    blocks = [f"## {topic[:1].upper()}{topic[1:]}", _paragraph_block(rng, topic)]
    extras = [maker for maker, chance in _EXTRA_BLOCKS if rng.random() < chance]
    rng.shuffle(extras)
    count = sum(len(tokenize(block)) for block in blocks)
    section = 0
    while count < target_tokens:
        maker = extras.pop() if extras else (_list_block, _paragraph_block)[section % 2]
        if section % 3 == 2:
            blocks.append(f"### {rng.choice(_HEADINGS)}")
        block = maker(rng, topic)
        blocks.append(block)
        count += len(tokenize(block))
        section += 1
    return "\n\n".join(blocks) + "\n"


def _list_block(rng: random.Random, topic: str) -> str:
    ordered = rng.random() < 0.5
    items = [_sentence(rng) for _ in range(rng.randint(3, 5))]
    return "\n".join(f"{n}. {item}" if ordered else f"- {item}" for n, item in enumerate(items, 1))


def _code_block(rng: random.Random, topic: str) -> str:
    name = re.sub(r"\W+", "_", topic.lower()).strip("_")[:24] or "stream"
    return (
        "```python\n"
        f"async def {name}(log, after=None):\n"
        f"    async for event in log.follow(after):\n"
        f"        yield event  # {rng.choice(_OBJECTS)}\n"
        "```"
    )


def _table_block(rng: random.Random, topic: str) -> str:
    rows = [f"| {rng.choice(_SUBJECTS)} | {rng.choice(_VERBS)} | {rng.randint(1, 99)} |" for _ in range(3)]
    return "\n".join(["| part | does | count |", "| --- | --- | ---: |", *rows])


def _paragraph_block(rng: random.Random, topic: str) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(2, 4)))


def _quote_block(rng: random.Random, topic: str) -> str:
    return f"> **Note:** {_sentence(rng)}"


_EXTRA_BLOCKS = ((_list_block, 1.0), (_code_block, 0.6), (_table_block, 0.4), (_quote_block, 0.3))
