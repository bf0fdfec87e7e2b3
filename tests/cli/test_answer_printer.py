"""``ssegate ask``'s terminal output: the answer on stdout, labelled asides on stderr."""

from __future__ import annotations

import io

from ssegate.cli_answer import AnswerPrinter


def printed(events: list[tuple[str, object]], *, color: bool = False) -> tuple[str, str]:
    out, side = io.StringIO(), io.StringIO()
    printer = AnswerPrinter(out, side, color=color)
    for event_type, data in events:
        printer.print(event_type, data)
    printer.finish()
    return out.getvalue(), side.getvalue()


def test_answer_printer_shows_a_tool_call_once_its_arguments_are_complete() -> None:
    out, side = printed(
        [
            ("text", {"delta": "Let me look."}),
            ("tool_call", {"phase": "start", "id": "t1", "name": "search", "index": 0}),
            ("tool_call", {"phase": "delta", "id": "t1", "delta": '{"query":'}),
            ("tool_call", {"phase": "delta", "id": "t1", "delta": ' "Paris", "limit": 3}'}),
            ("tool_call", {"phase": "end", "id": "t1"}),
            ("done", {"finish_reason": "tool_calls"}),
        ]
    )
    assert out == "Let me look.\n"
    assert side == 'tool call: search {"query": "Paris", "limit": 3}\n'


def test_answer_printer_keeps_thinking_runs_on_labelled_lines() -> None:
    out, side = printed(
        [
            ("thinking", {"delta": "first "}),
            ("thinking", {"delta": "thought"}),
            ("text", {"delta": "Answer"}),
            ("thinking", {"delta": "again"}),
        ]
    )
    assert out == "Answer\n"
    assert side == "thinking: first thought\nthinking: again\n"


def test_answer_printer_names_a_cut_short_tool_call_and_why_the_answer_stopped() -> None:
    _, side = printed(
        [
            ("tool_call", {"phase": "start", "id": "t1", "name": "search", "index": 0}),
            ("tool_call", {"phase": "delta", "id": "t1", "delta": '{"que'}),
            ("reset", {"reason": "trimmed"}),
            ("done", {"finish_reason": "length"}),
        ]
    )
    assert side.splitlines() == [
        "note: the stream started over from its earliest kept event (trimmed); text may repeat",
        "note: the answer stopped at the token limit (max_tokens)",
        'tool call: search {"que (incomplete)',
    ]
    _, cancelled = printed([("done", {"finish_reason": "cancelled", "reason": "abandoned"})])
    assert cancelled == "note: the generation was cancelled (abandoned)\n"


def test_answer_printer_colours_labels_only_when_asked() -> None:
    _, plain = printed([("thinking", {"delta": "hm"})])
    _, coloured = printed([("thinking", {"delta": "hm"})], color=True)
    assert "\x1b[" not in plain
    assert coloured == "\x1b[2mthinking: \x1b[0m\x1b[2mhm\x1b[0m\n"


def test_answer_printer_takes_the_whole_call_from_the_end_event() -> None:
    _, side = printed(
        [
            ("tool_call", {"phase": "start", "id": "t1", "name": "search", "index": 0}),
            ("tool_call", {"phase": "delta", "id": "t1", "delta": '{"q": "x"'}),
            ("tool_call", {"phase": "end", "id": "t1", "name": "search", "input": {"q": "x", "n": 2}}),
        ]
    )
    assert side == 'tool call: search {"q": "x", "n": 2}\n'
