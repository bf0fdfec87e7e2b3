"""The offline demo model: deterministic, prompt-dependent markdown and every slash command."""

from __future__ import annotations

import asyncio
import json

import pytest

from ssegate.providers import ProviderConfig, build_provider
from ssegate.providers.base import (
    Finished,
    GenerationRequest,
    Message,
    ModelInfo,
    ProviderEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UpstreamError,
    Usage,
)
from ssegate.providers.demo import LONG_ANSWER_TOKENS, DemoProvider
from tests.providers.helpers import ask, collect, of_type, text_of


def fast_demo(answer_tokens: int = 60) -> DemoProvider:
    return DemoProvider(ttft=0, tokens_per_second=0, answer_tokens=answer_tokens)


async def run(
    prompt: str, demo: DemoProvider | None = None
) -> tuple[list[ProviderEvent], UpstreamError | None]:
    return await collect((demo or fast_demo()).stream(ask(prompt)))


async def test_demo_same_prompt_gives_the_same_answer() -> None:
    first, _ = await run("How does resume work?")
    second, _ = await run("How does resume work?")

    assert first == second


async def test_demo_answer_depends_on_the_prompt() -> None:
    about_resume, _ = await run("How does resume work?")
    about_redis, _ = await run("Why use Redis streams?")

    assert text_of(about_resume) != text_of(about_redis)
    assert text_of(about_resume).startswith("## How does resume work")


async def test_demo_answers_in_markdown_with_model_usage_and_stop() -> None:
    events, error = await run("Explain server-sent events")

    assert error is None
    assert events[0] == ModelInfo("demo-1")
    text = text_of(events)
    assert text.startswith("## ")
    assert "\n- " in text or "\n1. " in text  # a list
    deltas = of_type(events, TextDelta)
    assert all(d.text for d in deltas)
    assert events[-2] == Usage(len("Explain server-sent events") // 4, len(deltas))
    assert events[-1] == Finished("stop", "demo-1")


async def test_demo_prompts_vary_between_code_blocks_and_tables() -> None:
    texts = [text_of((await run(f"Question number {n}"))[0]) for n in range(12)]

    assert any("```python" in text for text in texts)
    assert any("| --- |" in text for text in texts)
    assert all(text.count("```") % 2 == 0 for text in texts)  # never a cut code block


@pytest.mark.parametrize("answer_tokens", [30, 120])
async def test_demo_answer_length_follows_answer_tokens(answer_tokens: int) -> None:
    events, _ = await run("Tell me about streams", fast_demo(answer_tokens))

    count = len(of_type(events, TextDelta))
    assert answer_tokens <= count < answer_tokens + 60


@pytest.mark.parametrize("prompt", ["Tell me about streams", "Is this right? /think"])
async def test_demo_stops_at_max_tokens_with_finish_reason_length(prompt: str) -> None:
    request = GenerationRequest(messages=(Message("user", prompt),), max_tokens=7)
    events, error = await collect(fast_demo().stream(request))

    assert error is None
    assert len(of_type(events, TextDelta)) + len(of_type(events, ThinkingDelta)) == 7  # thinking counts
    assert of_type(events, Usage)[-1].output_tokens == 7
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.finish_reason == "length"


async def test_demo_long_gives_about_500_tokens() -> None:
    events, _ = await run("Tell me everything /long")

    assert LONG_ANSWER_TOKENS <= len(of_type(events, TextDelta)) < LONG_ANSWER_TOKENS + 60
    assert "/long" not in text_of(events)


async def test_demo_think_sends_thinking_before_the_answer() -> None:
    events, error = await run("Is this right? /think")

    assert error is None
    kinds = [type(e) for e in events if isinstance(e, TextDelta | ThinkingDelta)]
    first_text = kinds.index(TextDelta)
    assert first_text > 0
    assert set(kinds[:first_text]) == {ThinkingDelta}
    assert ThinkingDelta not in kinds[first_text:]


async def test_demo_tool_streams_a_tool_call_with_valid_json() -> None:
    events, error = await run("Find the docs on retries /tool")

    assert error is None
    starts = of_type(events, ToolCallStart)
    assert len(starts) == 1
    tool_id = starts[0].id
    deltas = of_type(events, ToolCallDelta)
    assert len(deltas) > 2
    assert json.loads("".join(d.partial_json for d in deltas)) == {
        "query": "Find the docs on retries",
        "limit": 3,
    }
    assert of_type(events, ToolCallEnd) == [ToolCallEnd(tool_id)]
    assert events.index(starts[0]) < events.index(deltas[0]) < events.index(ToolCallEnd(tool_id))
    assert events[-1] == Finished("tool_use", "demo-1")


async def test_demo_error_fails_overloaded_after_some_text() -> None:
    events, error = await run("Go on /error")

    assert text_of(events)
    assert not any(isinstance(e, Finished) for e in events)
    assert error is not None
    assert (error.code, error.retryable) == ("upstream_overloaded", True)


async def test_demo_error_auth_fails_before_any_text() -> None:
    events, error = await run("Hello /error-auth")

    assert events == []
    assert error is not None
    assert (error.code, error.retryable, error.status) == ("upstream_auth", False, 401)


async def test_demo_xss_answer_carries_hostile_markup() -> None:
    events, error = await run("Render this /xss")

    assert error is None
    text = text_of(events)
    for hostile in (
        "<img src=x onerror=alert(1)>",
        "<script>alert(1)</script>",
        "[click](javascript:alert(1))",
        "<iframe",
        '<b onclick="alert(1)">',
    ):
        assert hostile in text


async def test_demo_unknown_slash_words_are_just_text() -> None:
    with_word, _ = await run("What is /etc/hosts /nonsense")

    assert with_word[-1] == Finished("stop", "demo-1")
    assert "/nonsense" in text_of(with_word)


async def test_demo_paces_tokens_after_time_to_first_token() -> None:
    demo = DemoProvider(ttft=0.05, tokens_per_second=400, answer_tokens=20)
    loop = asyncio.get_running_loop()
    started = loop.time()
    events, _ = await run("pace me", demo)
    elapsed = loop.time() - started

    tokens = len(of_type(events, TextDelta))
    assert elapsed >= 0.05 + (tokens - 1) / 400  # sleeps never end early: a safe lower bound


async def test_demo_slow_is_five_times_slower() -> None:
    demo = DemoProvider(ttft=0.01, tokens_per_second=400, answer_tokens=20)
    loop = asyncio.get_running_loop()
    started = loop.time()
    events, _ = await run("pace me /slow", demo)
    elapsed = loop.time() - started

    tokens = len(of_type(events, TextDelta))
    assert elapsed >= 5 * (0.01 + (tokens - 1) / 400)


async def test_demo_stops_at_once_when_cancelled_mid_answer() -> None:
    demo = DemoProvider(ttft=0, tokens_per_second=0.001, answer_tokens=60)  # one token per 1000 s
    first = asyncio.Event()

    async def consume() -> None:
        async for event in demo.stream(ask("hi")):
            if isinstance(event, TextDelta):
                first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # a demo that ignored cancellation would hang here until the test timeout


async def test_demo_aclose_ends_the_stream() -> None:
    stream = fast_demo().stream(ask("hi"))
    first = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]

    assert first == ModelInfo("demo-1")
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_demo_is_built_without_any_key() -> None:
    provider = build_provider(
        "demo", ProviderConfig(demo_ttft=0, demo_tokens_per_second=0, demo_answer_tokens=10)
    )
    events, error = await collect(provider.stream(ask("hi")))
    await provider.aclose()

    assert error is None
    assert provider.info.name == "demo"
    assert events[-1] == Finished("stop", "demo-1")
