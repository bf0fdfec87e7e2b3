"""Metric labels stay bounded: unknown models, finish reasons and codes collapse to "other"."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ssegate.server.main import metrics_directory
from ssegate.server.metrics import MULTIPROC_ENV, Metrics
from tests.support.metrics import total


def test_labels_outside_the_known_sets_are_other() -> None:
    metrics = Metrics(models=["claude-x", "gpt-y"])
    assert metrics.model_label("claude-x") == "claude-x"
    assert metrics.model_label("someone's-fine-tune-1234") == "other"
    assert metrics.model_label(None) == "other"
    assert Metrics.finish_label("tool_use") == "tool_use"
    assert Metrics.finish_label("a provider's new word") == "other"
    assert Metrics.code_label("upstream_overloaded") == "upstream_overloaded"
    assert Metrics.code_label("Weird Code 42!") == "other"
    metrics.response("/v1/generations", "BREW", 418)
    metrics.on_terminal("gen-1", "done", {"finish_reason": "made-up"})
    text = metrics.render().decode()
    assert total(text, "ssegate_http_responses_total", method="other", code="418") == 1
    assert total(text, "ssegate_generations_finished_total", state="done", finish_reason="other") == 1
    assert "gen-1" not in text


def test_one_process_exports_process_and_runtime_metrics() -> None:
    text = Metrics().render().decode()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"):
        assert total(text, name) > 0, name
    assert total(text, "python_gc_collections_total") >= 0
    assert "python_gc_collections_total" in text


def test_serve_workers_get_a_metrics_directory_of_this_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with metrics_directory() as made:
        assert os.environ[MULTIPROC_ENV] == made
        assert Path(made).is_dir()
    assert not Path(made).exists()  # removed at the end
    assert MULTIPROC_ENV not in os.environ
    # One the operator chose is kept, emptied of the last run's values.
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("theirs")
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with metrics_directory() as given:
        assert given == str(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert tmp_path.is_dir()
