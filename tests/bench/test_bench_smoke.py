"""Smoke test of the benchmark harness: ``python -m bench.run --quick`` against ssegate only.

Checks that one command builds the C load client, drives every workload (W1–W6, and W1/W2 over
Redis with one and two workers) and writes the tables, the plot and the raw JSON lines. It asserts
shapes and delivery, never timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench.workloads import step_up

from bench import ablate, report, run, targets

pytestmark = pytest.mark.skipif(not targets.ssegate_available(), reason="the ssegate server is not installed")

FANOUT_KEYS = {"connections_ok", "events", "events_per_s", "latency_ms", "pub", "delivery_ratio", "server"}
LATENCY_KEYS = {"n", "p50", "p90", "p99", "p999", "max", "mean"}


def _run_quick(out: Path, *options: str, timeout: float = 300) -> list[dict[str, Any]]:
    # Not under make test's coverage tracer: a benchmark of traced servers measures the tracer.
    env = {name: value for name, value in os.environ.items() if not name.startswith("COVERAGE_")}
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out), *options],
        cwd=targets.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    raws = list((out / "raw").glob("*.jsonl"))
    assert len(raws) == 1
    return [json.loads(line) for line in raws[0].read_text().splitlines()]


@pytest.mark.timeout(310)  # ~225 s with W6 on a loaded 2-core machine
def test_bench_quick_run_measures_every_workload_and_writes_results(tmp_path: Path) -> None:
    records = _run_quick(tmp_path)

    # How fast the machine ran Python, before each workload and at the end: runs from different
    # hours of a shared machine are compared by it.
    speeds = [r for r in records if r["workload"] == "machine"]
    assert [r["step"] for r in speeds] == ["w1", "w2", "w3", "w4", "w5", "w6", "end"]
    assert all(r["result"]["python_loop_ms"] > 0 for r in speeds)
    records = [r for r in records if r["workload"] != "machine"]
    assert {r["workload"] for r in records} == {"w1", "w2", "w3", "w4", "w5", "w6"}
    assert {r["target"] for r in records} == {
        "ssegate",
        "ssegate-redis-1w",
        "ssegate-redis-2w",
        "direct",
        "ssegate-openai",  # W6: the OpenAI door in front of the fake's OpenAI side
    }
    # Scaling out: two workers over Redis still deliver every event to every subscriber, and every
    # token of every generation (checked below).
    for name in ("ssegate-redis-1w", "ssegate-redis-2w"):
        assert {r["workload"] for r in records if r["target"] == name} == {"w1", "w2", "w4"}
    for record in records:
        result = record["result"]
        assert set(result["latency_ms"]) == LATENCY_KEYS
        assert sum(result["errors"].values()) == 0, record
        if record["workload"] in ("w1", "w2"):
            assert set(result) >= FANOUT_KEYS
            assert result["connections_ok"] == record["params"]["subs"]
            assert result["delivery_ratio"] == 1.0, record  # every published event reached every subscriber
        elif record["workload"] == "w3":
            assert result["connections_ok"] == record["params"]["conns"]
            assert result["server"]["rss_kb_end"] > 0
        else:
            streams = result["streams"]
            assert streams["completed"] == record["params"]["streams"]
            assert streams["token_delivery"] == 1.0, record
            assert set(streams["ttft_ms"]) == LATENCY_KEYS

    markdown = (tmp_path / "results.md").read_text()
    headings = (
        "## Summary",
        "W1 fan-out",
        "W2 saturation",
        "W3 idle",
        "W4 LLM streams",
        "W5 TTFT",
        "W6 OpenAI",
    )
    for heading in headings:
        assert heading in markdown
    assert "| ssegate |" in markdown or "| ssegate " in markdown
    assert "ssegate, Redis, 2 workers" in markdown
    assert f"before W4 {speeds[3]['result']['python_loop_ms']:.0f}" in markdown
    assert (tmp_path / "results.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.timeout(120)
def test_the_python_floor_reference_relays_every_token_and_is_not_counted_as_a_peer(tmp_path: Path) -> None:
    records = _run_quick(tmp_path, "--only", "w4", "--no-ssegate", "--peers", "python-floor", timeout=110)
    assert {r["target"] for r in records} == {"python-floor", "machine"}
    records = [r for r in records if r["workload"] != "machine"]
    for record in records:
        streams = record["result"]["streams"]
        assert streams["completed"] == record["params"]["streams"]
        assert streams["token_delivery"] == 1.0, record
    assert "bare Python relay (reference)" in (tmp_path / "results.md").read_text()
    # A reference is shown, not beaten: W4's "above every peer" leaves it out.
    summary = {"ssegate": {"w4": {"best_n": 700}}, "express-sdk": {"w4": {"best_n": 200}}}
    assert report.goals_met({**summary, "python-floor": {"w4": {"best_n": 1000}}})["w4"] == "**yes**"
    assert report.goals_met({**summary, "express-sdk": {"w4": {"best_n": 800}}})["w4"] == "**no**"


def test_w6_goals_compare_the_openai_door_with_litellm_and_with_w4() -> None:
    def summary(door: int, litellm: int | None, w4: int) -> dict[str, Any]:
        s: dict[str, Any] = {"ssegate": {"w4": {"best_n": w4}}, "ssegate-openai": {"w6": {"best_n": door}}}
        if litellm is not None:
            s["litellm"] = {"w6": {"best_n": litellm}}
        return s

    assert report.goals_met(summary(400, 100, 450))["w6"] == "**yes**"
    assert report.goals_met(summary(390, 100, 450))["w6"] == "**no**"  # under 4× LiteLLM
    assert report.goals_met(summary(400, 100, 500))["w6"] == "**no**"  # 20 % under W4
    assert "w6" not in report.goals_met(summary(400, None, 450))  # LiteLLM not in the run: not judged
    notes = run.w6_observations(summary(400, 100, 450))
    assert any("ssegate / LiteLLM = 4.0×" in note for note in notes)
    assert any("89 % of ssegate's own W4 N (450)" in note for note in notes)


def test_a_search_goes_on_past_one_failing_step_and_stops_after_two() -> None:
    outcomes = {100: True, 200: True, 300: False, 400: True, 500: False, 600: False, 800: True}
    tried: list[int] = []

    def passes(n: int) -> bool:
        tried.append(n)
        return outcomes[n]

    assert step_up(sorted(outcomes), passes) == [100, 200, 400]
    assert tried == [100, 200, 300, 400, 500, 600]  # 800 is never tried


def test_bench_with_fast_paths_off_runs_ssegate_on_public_apis_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(run.FAST_PATHS_ENV, raising=False)  # restored after the test
    raw = tmp_path / "empty.jsonl"
    raw.write_text("")
    assert run.main(["--fast-paths=off", "--from-raw", str(raw), "--out", str(tmp_path)]) == 0
    # what the ssegate processes the bench starts inherit (bench.procs passes os.environ on)
    assert os.environ[run.FAST_PATHS_ENV] == "0"
    assert "ssegate's fast paths: off (SSEGATE_FAST_PATHS=0)" in (tmp_path / "results.md").read_text()


@pytest.mark.timeout(120)
def test_ablation_measures_each_claiming_shortcut_off_alone_between_all_on_and_all_off(
    tmp_path: Path,
) -> None:
    records = _run_quick(tmp_path, "--ablate", "--only", "w1,w3", timeout=110)
    measured = [r for r in records if r["workload"] != "machine"]
    for workload in ("w1", "w3"):
        labels = [label for label, _value in ablate.variants(workload)]
        assert labels[0] == ablate.ALL_ON
        assert labels[-1] == ablate.ALL_OFF
        assert labels[1:-1] == [f"-{name}" for name in ablate.CLAIMS[workload]]
        assert [r["variant"] for r in measured if r["workload"] == workload] == labels
    # every ssegate the run started saw its variant's switch (its start-up line says which were off)
    stamp = next((tmp_path / "raw").glob("*.jsonl")).stem
    said = (targets.BENCH_DIR / "out/logs" / f"ablation-{stamp}" / "ssegate.log").read_text()
    for name in ("live_socket", "slim_protocol", "served_app", "held_streams"):
        assert f"fast paths switched off (SSEGATE_FAST_PATHS): {name}\n" in said
    assert said.count("fast paths off (SSEGATE_FAST_PATHS=0)") == 2
    page = (tmp_path / "results.md").read_text()
    assert "| `live_socket` |" in page
    assert "| -held_streams |" in page


def test_every_shortcut_claims_a_workload_the_ablation_measures() -> None:
    from ssegate import _fast

    claimed = {name for names in ablate.CLAIMS.values() for name in names}
    assert claimed == set(_fast.SHORTCUTS)


def test_ablation_reads_a_shortcut_that_costs_under_five_percent_as_not_earning_its_place() -> None:
    def record(variant: str, kib: float) -> dict[str, Any]:
        return {"workload": "w3", "variant": variant, "result": {"server": {"kb_per_conn": kib}}}

    rows = [record("all on", 10.0), record("-slim_protocol", 10.3), record("-served_app", 12.0)]
    rows += [record("-held_streams", 9.0), record("all off", 18.0)]
    costs = ablate.costs(ablate.summary(rows, ["w3"]))
    assert costs == {
        "slim_protocol": {"w3": pytest.approx(3.0)},
        "served_app": {"w3": pytest.approx(20.0)},
        "held_streams": {"w3": pytest.approx(-10.0)},
    }
