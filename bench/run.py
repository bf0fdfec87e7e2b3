"""``python -m bench.run``: build the load client, set up peers, run W1–W6, write the results.

    python -m bench.run                      # everything, 3 reps (~20 min), into docs/benchmarks/
    python -m bench.run --quick              # seconds-long smoke run, ssegate only, into bench/out/quick/
    python -m bench.run --only w1,w3 --peers nchan,express --reps 1
    python -m bench.run --fast-paths=off     # ssegate on public APIs only (docs/performance.md)
    python -m bench.run --ablate             # each fast path off alone vs all on/off (~15 min), into
                                             # docs/benchmarks/ablation/ (bench/ablate.py)

Writes ``<out>/results.md`` (medians), ``<out>/results.png`` and ``<out>/raw/<timestamp>.jsonl``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import ablate, report, targets
from bench.workloads import SPEED_PROBE_END, Plan, Record, Runner, build_sseload, by, median

WORKLOADS = ("w1", "w2", "w3", "w4", "w5", "w6")
# ssegate's switch for its fast paths (ssegate._fast): "0" runs it on public APIs only.
FAST_PATHS_ENV = "SSEGATE_FAST_PATHS"
ALL_PEERS = tuple(t.name for t in (*targets.FANOUT_PEERS, *targets.LLM_PEERS, *targets.W6_PEERS))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="seconds-long smoke run (tiny N, 1 rep, ssegate only)"
    )
    parser.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads (w1..w6)")
    parser.add_argument(
        "--peers",
        default=None,
        help=f"comma-separated peers, 'all' or 'none' (default: all; --quick: none): {', '.join(ALL_PEERS)}",
    )
    parser.add_argument(
        "--reps", type=int, default=None, help="repetitions per measurement (default 3; --quick 1)"
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default docs/benchmarks)")
    parser.add_argument("--no-ssegate", action="store_true", help="measure the peers only")
    parser.add_argument(
        "--no-scale",
        action="store_true",
        help="skip ssegate over Redis with 1 and 2 workers (W1/W2/W4; needs redis-server)",
    )
    parser.add_argument(
        "--fast-paths",
        choices=("on", "off"),
        default="on",
        help="off: every ssegate process runs on public APIs only (SSEGATE_FAST_PATHS=0, see "
        "docs/performance.md); results go to docs/benchmarks/fast-paths-off unless --out",
    )
    parser.add_argument(
        "--ablate",
        action="store_true",
        help="ssegate alone, each workload with its fast paths all on, each off alone, all off "
        "(bench/ablate.py); results go to docs/benchmarks/ablation unless --out",
    )
    parser.add_argument(
        "--from-raw",
        type=Path,
        default=None,
        help="measure nothing: rebuild results.md/png from a raw .jsonl",
    )
    args = parser.parse_args(argv)
    args.only = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = set(args.only) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    peers = args.peers if args.peers is not None else ("none" if args.quick or args.ablate else "all")
    args.peers = set() if peers == "none" else set(ALL_PEERS) if peers == "all" else set(peers.split(","))
    if args.peers - set(ALL_PEERS):
        parser.error(f"unknown peer(s): {', '.join(sorted(args.peers - set(ALL_PEERS)))}")
    if args.reps is not None and not 1 <= args.reps <= 10:
        parser.error("--reps must be between 1 and 10")
    if args.ablate and (args.fast_paths == "off" or args.no_ssegate or args.from_raw or args.peers):
        parser.error("--ablate measures ssegate alone, with its own fast-path settings")
    return args


def ssegate_has_topics(logs: Path) -> bool:
    """Probe once: does this build of ssegate answer POST /v1/topics/{topic}/events?"""
    with targets.start_fanout(targets.SSEGATE, logs) as (port, _pids):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(
                "POST",
                targets.SSEGATE.pub_path,
                body=json.dumps({"data": {"probe": 1}}),
                headers={"content-type": "application/json"},
            )
            status = conn.getresponse().status
        except OSError:
            return False
        finally:
            conn.close()
    return 200 <= status < 300


def plan_text(plan: Plan) -> str:
    p = plan
    rates = ", ".join(f"{r:g}" for r in p.w2_rates)
    items = [
        f"**W1 fan-out**: {p.w1_subs:,} subscribers, one publisher at {p.w1_rate:g} events/s (~100 B JSON"
        f" carrying its CLOCK_REALTIME µs send time), {p.w1_warmup:g} s warm-up + {p.w1_window:g} s window,"
        f" {p.reps} runs. Only events *published* inside the window count; afterwards the client waits up"
        " to 2 s for stragglers, so *delivery* = received / (published × subscribers) exactly.",
        f"**W2 saturation**: {p.w2_subs:,} subscribers; publish rate stepped through {rates} /s"
        f" ({p.w2_warmup:g} s + {p.w2_window:g} s each, fresh server per step) until two steps in a row"
        " fail; a step is *sustained* when p99 ≤ 250 ms, delivery ≥ 95 %, publisher back-pressure ≤ 2 %"
        " (a due publish finding all 8 keep-alive publisher connections busy is skipped and counted) and"
        f" no errors. The highest sustained step is repeated to {p.reps} runs.",
        f"**W3 idle**: {p.w3_conns:,} subscribers held {p.w3_hold:g} s, no events (keep-alive 15 s);"
        " memory per connection = (PSS of the server's processes with the connections − before)"
        " / connections.",
        f"**W4 LLM streams**: N generations, each {p.w4_tokens} tokens at {p.w4_rate:g} tokens/s from"
        " `bench/fake_anthropic_upstream.py` (Anthropic's SSE wire format, one timer for all streams,"
        " each text delta carries its write time), one viewer each, opened evenly over"
        f" {p.w4_ramp:g} s. Pass: p99 token latency (upstream write → client receipt) ≤ 100 ms,"
        " TTFT p99 ≤ 120 ms (request start → first token; includes the fake's 20 ms before its first"
        " delta), ≥ 99.9 % tokens, every stream completed, no errors. N is stepped up until two steps"
        f" in a row fail, as in W2; the highest passing N is repeated to {p.reps} runs and a majority"
        " must pass (else the next lower passing N is confirmed).",
        "**W6 OpenAI door**: W4's streams, sizes, steps and pass predicate, but each is a"
        " `POST /v1/chat/completions` with `stream: true` (OpenAI's Chat Completions wire format end to end:"
        " the fake upstream answers `chat.completion.chunk` lines) through ssegate's OpenAI door (`ssegate"
        " serve --provider openai`, SSEGATE_OPENAI_BASE_URL at the fake) and through LiteLLM's proxy"
        " (`litellm --config`, one model `openai/gpt-fake` with `api_base` at the fake; one process, no"
        " database, LITELLM_OFFLINE_MODE=true and LITELLM_LOCAL_MODEL_COST_MAP=True so it starts"
        " offline). Goals: ssegate's N ≥ 4× LiteLLM's, and within 15 % of ssegate's W4 N in the same run.",
        f"**W5 overhead**: {p.w5_streams} streams of {p.w5_tokens} tokens, TTFT straight from the fake"
        " upstream vs. through the gateway, alternating, same upstream process; overhead = gateway"
        " TTFT percentile − direct TTFT percentile.",
        "Client: `bench/sseload.c` (gcc -O2), one thread, epoll; fan-out runs sleep 1 ms between"
        " epoll rounds (`-B 1000`) so each recv() drains several events (≤ 1 ms added latency; keeps"
        " the client off the server's core). Latency is taken once per recv(). CPU % is of one core,"
        " from /proc. *Machine CPU %* is the whole box over the run (server + client + upstream +"
        " anything else); the machine is shared, so before each measurement the runner waits (≤ 30 s)"
        " until it is nearly idle.",
        "ssegate runs as `ssegate serve --port P` (one process, in-memory log; W4/W5 add `--provider"
        " anthropic` with SSEGATE_ANTHROPIC_BASE_URL pointing at the fake) with its per-client stream and"
        " generation-start limits lifted and its access log off (the peers log no requests either):"
        " " + ", ".join(f"`{k}={v}`" for k, v in targets.SSEGATE_BENCH_ENV.items()) + ".",
        "*ssegate, Redis, 1 / 2 workers* (W1, W2 and W4): the same server with `--redis` pointing at a"
        " `redis-server` the bench starts (no persistence) and `--workers 1` or `--workers 2`. Publishes"
        " reach either worker and every worker fans each event out to its own subscribers; in W4 each"
        " generation's events go through Redis from its producer to its viewer, whichever worker took"
        " the POST. Server CPU and memory there include Redis's.",
    ]
    return "\n".join(f"- {item}" for item in items)


def _cpu_us_per_event(records: list[Record]) -> float:
    """Server CPU time per delivered event (µs), median over the runs: the cost that caps throughput."""
    costs = [
        1e4 * r["result"]["server"]["cpu_pct"] / r["result"]["events_per_s"]
        for r in records
        if r["result"]["events_per_s"] > 0
    ]
    return median(costs) if costs else float("nan")


def observations(records: list[Record], skipped: list[str]) -> list[str]:
    notes = list(skipped)
    s = report.summarize(records)
    for name, data in s.items():
        title = data["title"]
        if "w1" in data:
            w1 = data["w1"]
            cost = _cpu_us_per_event(by(records, workload="w1", target=name))
            notes.append(
                f"{title}: W1 delivered {w1['ev_s']:,.0f} ev/s of the 200,000 offered, server at "
                f"{w1['cpu']:.0f} % of a core (≈ {cost:.1f} µs of server CPU per delivered event), client "
                f"{w1['client_cpu']:.0f} %, publisher back-pressure {100 * w1['backpressure']:.0f} %."
            )
        if "w2" in data:
            w2 = data["w2"]
            state = "saturated" if w2["cpu"] >= 90 else "not CPU-saturated"
            notes.append(
                f"{title}: at its highest sustained W2 step ({w2['best_rate'] or 0:g}/s) the server used "
                f"{w2['cpu']:.0f} % of a core ({state}), the client {w2['client_cpu']:.0f} %; peak delivered "
                f"{w2['peak_ev_s']:,.0f} ev/s at any step."
            )
        if "w4" in data:
            w4 = data["w4"]
            cost = _cpu_us_per_event(by(records, workload="w4", target=name))
            passed = (
                f"passed up to N={w4['best_n']} ({w4['runs_pass']}/{w4['runs']} runs; gateway at "
                f"{w4['cpu']:.0f} % of a core, p99 {w4['p99']:.1f} ms, TTFT p99 {w4['ttft_p99']:.0f} ms)"
                if w4["best_n"]
                else "passed at no step"
            )
            notes.append(
                f"{title}: W4 {passed}; ≈ {cost:.0f} µs of gateway CPU per token (median of all steps)."
            )
    notes += w6_observations(s)
    return notes


def w6_observations(s: dict[str, Any]) -> list[str]:
    """W6's two comparisons: ssegate's OpenAI door vs LiteLLM, and vs ssegate's own W4."""
    door = s.get(targets.LLM_SSEGATE_OPENAI.name, {}).get("w6")
    if not door:
        return []
    n = door["best_n"] or 0
    notes = [f"W6: ssegate's OpenAI door passed up to N={n}."]
    litellm = s.get("litellm", {}).get("w6")
    if litellm:
        peer = litellm["best_n"] or 0
        ratio = f"{n / peer:.1f}×" if peer else "∞ (LiteLLM passed no step)"
        notes.append(f"W6: LiteLLM's proxy passed up to N={peer}; ssegate / LiteLLM = {ratio} (goal ≥ 4×).")
    w4 = s.get(targets.LLM_SSEGATE.name, {}).get("w4")
    if w4 and w4["best_n"]:
        notes.append(
            f"W6 vs W4: the OpenAI door's N is {100 * n / w4['best_n']:.0f} % of ssegate's own W4 N"
            f" ({w4['best_n']}) in this run (goal: within 15 %)."
        )
    return notes


def write_results(out: Path, records: list[Record], command: str, notes: list[str], plan: Plan) -> None:
    fast = "off (SSEGATE_FAST_PATHS=0)" if os.environ.get(FAST_PATHS_ENV) == "0" else "on"
    notes = [*notes, f"ssegate's fast paths: {fast} (docs/performance.md)."]
    markdown = report.render_markdown(
        records, versions=targets.versions(), command=command, notes=notes, plan_text=plan_text(plan)
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown)
    with contextlib.suppress(ImportError):  # matplotlib is the optional [bench] extra
        report.render_png(records, out / "results.png")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan.quick() if args.quick else Plan()
    if args.reps is not None:
        plan = replace(plan, reps=args.reps)
    if args.fast_paths == "off":
        # The ssegate processes the bench starts inherit this environment (bench.procs).
        os.environ[FAST_PATHS_ENV] = "0"
    published = targets.REPO / "docs/benchmarks"
    if args.ablate:
        out_dir = args.out or (
            targets.BENCH_DIR / "out/quick-ablation" if args.quick else published / "ablation"
        )
        command = "python -m bench.run " + shlex.join(argv if argv is not None else sys.argv[1:])
        # only the workloads a fast path claims to help (W6 is W4 through a door: none of its own)
        page = ablate.run(out_dir, plan, [w for w in args.only if w in ablate.CLAIMS], command.strip())
        Runner._say(f"wrote {page}")
        return 0
    out: Path = args.out or (
        targets.BENCH_DIR / "out/quick"
        if args.quick
        else published / "fast-paths-off"
        if args.fast_paths == "off"
        else published
    )
    if args.from_raw is not None:
        records = [json.loads(line) for line in args.from_raw.read_text().splitlines() if line.strip()]
        command = f"python -m bench.run --from-raw {args.from_raw.name}"
        write_results(out, records, command, observations(records, []), plan)
        return 0
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = out / "raw" / f"{stamp}.jsonl"
    raw.parent.mkdir(parents=True, exist_ok=True)
    logs = targets.BENCH_DIR / "out/logs" / stamp
    sseload = build_sseload(targets.BENCH_DIR / "out")
    runner = Runner(sseload, raw, logs, plan)
    say = Runner._say
    skipped: list[str] = []

    ready = targets.setup_peers(args.peers) if args.peers else set()
    for name in sorted(args.peers - ready):
        skipped.append(f"{name}: set-up failed (see stderr); not measured.")
    fanout = [t for t in targets.FANOUT_PEERS if t.name in ready]
    llm = [t for t in targets.LLM_PEERS if t.name in ready]
    w6 = [t for t in targets.W6_PEERS if t.name in ready]
    with_ssegate = not args.no_ssegate and targets.ssegate_available()
    if not args.no_ssegate and not with_ssegate:
        skipped.append(
            "ssegate: the server is not installed yet (no src/ssegate/server or .venv/bin/ssegate)."
        )
    scale: list[targets.FanoutTarget] = []
    with_redis = with_ssegate and not args.no_scale and {"w1", "w2", "w4"} & set(args.only)
    if with_redis and shutil.which("redis-server") is None:
        skipped.append("ssegate over Redis: no redis-server on PATH (scripts/setup.sh test installs it).")
        with_redis = False
    if with_ssegate and {"w1", "w2", "w3"} & set(args.only):
        if ssegate_has_topics(logs):
            fanout.insert(0, targets.SSEGATE)
            if with_redis:
                scale = list(targets.SSEGATE_SCALE)
        else:
            skipped.append(
                "ssegate: POST /v1/topics/{topic}/events is not answered with 2xx yet; W1–W3 skipped."
            )
    if with_ssegate:
        llm[:0] = [targets.LLM_SSEGATE, *(targets.LLM_SSEGATE_SCALE if with_redis else ())]
        w6.insert(0, targets.LLM_SSEGATE_OPENAI)

    for workload in args.only:
        runner.machine_speed(workload)
        chosen: list[targets.FanoutTarget] | list[targets.LlmTarget]
        if workload in ("w1", "w2"):
            chosen = fanout[:1] + scale + fanout[1:]  # scale is set only when ssegate leads fanout
        elif workload == "w3":
            chosen = fanout
        elif workload == "w4":
            chosen = llm
        elif workload == "w6":
            chosen = w6
        else:
            chosen = [t for t in llm if t.name == "ssegate"]  # W5: the one-process default only
        for target in chosen:
            say(f"--- {workload} {target.name}")
            try:
                getattr(runner, workload)(target)
            except (RuntimeError, TimeoutError, OSError) as exc:
                skipped.append(f"{target.name} {workload}: run failed: {exc}")
                say(f"{workload} {target.name} failed: {exc}")

    runner.machine_speed(SPEED_PROBE_END)
    records = runner.records
    command = "python -m bench.run " + shlex.join(argv if argv is not None else sys.argv[1:])
    write_results(out, records, command.strip(), observations(records, skipped), plan)
    say(f"wrote {out / 'results.md'}, {out / 'results.png'}, {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
