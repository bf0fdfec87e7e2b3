"""W1–W6: what each workload runs, and when a run counts as sustained / passing.

Every run starts its server afresh, drives it with ``sseload`` (bench/sseload.c) and returns one
record: the workload, target and step, the parameters, and sseload's JSON summary.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench import targets

BENCH_DIR = Path(__file__).resolve().parent
SSELOAD_SRC = BENCH_DIR / "sseload.c"

# W2: a publish rate is sustained when all of these hold (the W2 definition, plus the
# publisher not being throttled: a server that cannot absorb publishes would look better than it is).
W2_MAX_P99_MS = 250.0
W2_MIN_DELIVERY = 0.95
W2_MAX_BACKPRESSURE = 0.02
# W4: the predicate.
W4_MAX_P99_MS = 100.0
W4_MAX_TTFT_P99_MS = 120.0
W4_MIN_TOKENS = 0.999
# Client read coalescing for fan-out runs: ≤ 1 ms added latency, keeps the client off the server's core.
FANOUT_BATCH_US = 1000
# Before each measurement, wait up to QUIET_MAX_WAIT_S for the machine to be this idle (% of one
# core, whole box, incl. the idle server under test); the wait and the load are recorded.
QUIET_BUSY_PCT = 25.0
# The machine's speed for Python: a fixed loop, timed this many times (the best counts).
SPEED_PROBE_TIMES = 5
SPEED_PROBE_ROUNDS = 1_000_000
MACHINE = "machine"  # the workload and target of a machine-speed record
SPEED_PROBE_END = "end"  # the step of the reading taken after the last workload
# W2/W4: how many steps (from the highest passing one down) may be re-run to confirm a result.
CONFIRM_TRIES = 2
QUIET_SAMPLE_S = 0.5
QUIET_MAX_WAIT_S = 30.0

Record = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """Sizes and durations; ``quick()`` is the seconds-long smoke version."""

    reps: int = 3
    w1_subs: int = 1000
    w1_rate: float = 200
    w1_warmup: float = 2
    w1_window: float = 8
    w2_subs: int = 1000
    w2_rates: tuple[float, ...] = (10, 25, 50, 100, 150, 200, 300, 400, 500, 700, 1000, 1500, 2000, 3000)
    w2_warmup: float = 1
    w2_window: float = 4
    w3_conns: int = 10_000
    w3_hold: float = 4
    w4_steps: dict[str, tuple[int, ...]] = field(
        default_factory=lambda: {
            "ssegate": (25, 50, 75, 100, 150, 200, 250, 300, 350, 400, 500, 600, 800, 1000, 1200, 1600),
            # The embedded log's steps: the goal is a ratio of its N (70 %), which a grid stopping
            # at 400 could not show against 600, nor one coarser than its own at the boundary.
            "ssegate-redis-1w": (25, 50, 75, 100, 150, 200, 250, 300, 350, 400, 500, 600, 800, 1000),
            "ssegate-redis-2w": (25, 50, 75, 100, 150, 200, 250, 300, 350, 400, 500, 600, 800, 1000),
            "express-sdk": (50, 100, 150, 200, 250, 300, 400, 500, 600),
            "starlette-sdk": (25, 50, 75, 100, 150, 200, 300),
            "python-floor": (100, 200, 300, 400, 500, 600, 800, 1000, 1200),
        }
    )
    w4_tokens: int = 500
    w4_rate: float = 50
    w4_ramp: float = 2
    w5_streams: int = 20
    w5_tokens: int = 100
    # The ablation (bench/ablate.py) runs one fixed step of W2 and W4 per variant, not a search.
    ablate_w2_rate: float = 1000
    ablate_w4_n: int = 400
    # W6: W4's streams and predicate through an OpenAI Chat Completions front (tokens, rate, ramp as W4)
    w6_steps: dict[str, tuple[int, ...]] = field(
        default_factory=lambda: {
            # as W4's "ssegate": the door is compared with that figure
            "ssegate-openai": (25, 50, 75, 100, 150, 200, 250, 300, 350, 400, 500, 600, 800, 1000, 1200),
            "litellm": (5, 10, 25, 50, 75, 100, 150, 200, 250, 300, 400),  # from 5: a ratio needs a pass
        }
    )
    # bounded wait for a quiet machine before each measurement (0: do not wait, e.g. in CI)
    quiet_wait_s: float = QUIET_MAX_WAIT_S

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            reps=1,
            w1_subs=20,
            w1_rate=20,
            w1_warmup=0.3,
            w1_window=1,
            w2_subs=20,
            w2_rates=(40,),  # one step a target (each ~4 s): the search is unit-tested (step_up)
            w2_warmup=0.3,
            w2_window=1,
            w3_conns=100,
            w3_hold=0.5,
            w4_steps={
                "ssegate": (5,),
                "ssegate-redis-1w": (5,),
                "ssegate-redis-2w": (5,),
                "express-sdk": (5,),
                "starlette-sdk": (5,),
                "python-floor": (5,),
            },
            w4_tokens=20,
            w4_rate=50,
            w4_ramp=0.3,
            w5_streams=5,
            quiet_wait_s=0,
            w5_tokens=10,
            ablate_w2_rate=40,
            ablate_w4_n=5,
            w6_steps={"ssegate-openai": (5,), "litellm": (5,)},
        )


def build_sseload(out_dir: Path) -> Path:
    """Compile the load client (gcc -O2) into ``out_dir``; rebuilt only when the source changed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / "sseload"
    if not binary.exists() or binary.stat().st_mtime < SSELOAD_SRC.stat().st_mtime:
        subprocess.run(
            ["gcc", "-O2", "-Wall", "-pthread", "-o", str(binary), str(SSELOAD_SRC)], check=True, timeout=120
        )
    return binary


class Runner:
    """Runs sseload against started targets and appends every record to a JSON-lines file."""

    def __init__(self, sseload: Path, raw: Path, logs: Path, plan: Plan) -> None:
        self.sseload = sseload
        self.raw = raw
        self.logs = logs
        self.plan = plan
        self.records: list[Record] = []
        # Merged into every record (the ablation's variant and repetition).
        self.extra: Record = {}

    def _record(self, record: Record) -> Record:
        record.update(self.extra)
        record["at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.records.append(record)
        with self.raw.open("a") as out:
            out.write(json.dumps(record) + "\n")
        return record

    def _sseload(self, args: list[str], budget_s: float, *, measure: bool = True) -> dict[str, Any]:
        quiet = wait_for_quiet(self.plan.quiet_wait_s) if measure and self.plan.quiet_wait_s > 0 else {}
        before = _box_ticks()
        result = subprocess.run(
            [str(self.sseload), *args], capture_output=True, text=True, timeout=budget_s + 60, check=False
        )
        after = _box_ticks()
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines:
            raise RuntimeError(f"sseload failed ({result.returncode}): {result.stderr[-1000:]}")
        summary: dict[str, Any] = json.loads(lines[-1])
        # the whole machine over the run (% of one core): shows load from outside the benchmark
        summary["box"] = {**quiet, "cpu_pct": round(_busy_pct(before, after), 1)}
        return summary

    def machine_speed(self, before: str) -> Record:
        """Record how fast the machine runs Python now (see :func:`python_loop_ms`), ``before`` a
        workload (or ``"end"``)."""
        ms = python_loop_ms()
        self._say(f"machine speed {speed_probe_moment(before)}: {ms:.1f} ms for the fixed Python loop")
        record: Record = {
            "workload": MACHINE,
            "target": MACHINE,
            "title": "machine",
            "step": before,
            "result": {"python_loop_ms": round(ms, 1)},
        }
        return self._record(record)

    @staticmethod
    def _say(text: str) -> None:
        print(f"bench: {text}", file=sys.stderr, flush=True)

    # --------------------------------------------------------------------------------- fan-out

    def fanout(
        self,
        workload: str,
        target: targets.FanoutTarget,
        subs: int,
        rate: float,
        warmup: float,
        window: float,
        step: float | None = None,
        rep: int = 0,
    ) -> Record:
        with targets.start_fanout(target, self.logs) as (port, pids):
            summary = self._sseload(
                [
                    "-p",
                    str(port),
                    "-P",
                    target.sub_path,
                    "-c",
                    str(subs),
                    "-w",
                    str(warmup),
                    "-d",
                    str(window),
                    "-g",
                    "2",
                    "-T",
                    "30",
                    "-R",
                    str(rate),
                    "-U",
                    target.pub_path,
                    "-F",
                    target.pub_format,
                    "-z",
                    "100",
                    "-B",
                    str(FANOUT_BATCH_US),
                    "-S",
                    ",".join(map(str, pids)),
                    "-L",
                    f"{workload}-{target.name}",
                ],
                budget_s=warmup + window + 40,
            )
        record = {
            "workload": workload,
            "target": target.name,
            "title": target.title,
            "rep": rep,
            "step": step,
            "params": {
                "subs": subs,
                "rate": rate,
                "warmup_s": warmup,
                "window_s": window,
                "batch_us": FANOUT_BATCH_US,
            },
            "result": summary,
        }
        record["sustained"] = w2_sustained(summary, subs)
        lat = summary["latency_ms"]
        self._say(
            f"{workload} {target.name} rate={rate:g} subs={subs}: {summary['events_per_s']:,.0f} ev/s "
            f"p50={lat['p50']} p99={lat['p99']} ms delivery={summary.get('delivery_ratio')} "
            f"backpressure={summary['pub']['backpressure']} cpu={summary['server']['cpu_pct']}%"
        )
        return self._record(record)

    def w1(self, target: targets.FanoutTarget) -> None:
        p = self.plan
        for rep in range(p.reps):
            self.fanout("w1", target, p.w1_subs, p.w1_rate, p.w1_warmup, p.w1_window, rep=rep)

    def w2(self, target: targets.FanoutTarget) -> None:
        """Step the publish rate up until two steps in a row fail, then confirm the best step."""
        p = self.plan
        passing = step_up(
            p.w2_rates,
            lambda rate: bool(
                self.fanout("w2", target, p.w2_subs, rate, p.w2_warmup, p.w2_window, step=rate)["sustained"]
            ),
        )
        self._confirm(
            passing,
            lambda rate, rep: bool(
                self.fanout("w2", target, p.w2_subs, rate, p.w2_warmup, p.w2_window, step=rate, rep=rep)[
                    "sustained"
                ]
            ),
        )

    def _confirm(self, passing: list[Any], rerun: Callable[[Any, int], bool]) -> None:
        """Repeat the highest passing step to ``reps`` runs; if most of them fail (noise, or a lucky
        first run), step down and confirm the next one (at most ``CONFIRM_TRIES`` steps)."""
        for step in sorted(passing, reverse=True)[:CONFIRM_TRIES]:
            passed = 1 + sum(rerun(step, rep) for rep in range(1, self.plan.reps))
            if 2 * passed > self.plan.reps:
                return

    def w3(self, target: targets.FanoutTarget) -> None:
        p = self.plan
        for rep in range(p.reps):
            with targets.start_fanout(target, self.logs) as (port, pids):
                summary = self._sseload(
                    [
                        "-p",
                        str(port),
                        "-P",
                        target.sub_path,
                        "-c",
                        str(p.w3_conns),
                        "-d",
                        str(p.w3_hold),
                        "-T",
                        "60",
                        "-q",
                        "256",
                        "-S",
                        ",".join(map(str, pids)),
                        "-L",
                        f"w3-{target.name}",
                    ],
                    budget_s=p.w3_hold + 60,
                )
            self._say(
                f"w3 {target.name}: {summary['connections_ok']}/{p.w3_conns} connected in "
                f"{summary['connect_s']} s, {summary['server']['kb_per_conn']} KiB/conn"
            )
            self._record(
                {
                    "workload": "w3",
                    "target": target.name,
                    "title": target.title,
                    "rep": rep,
                    "step": None,
                    "params": {"conns": p.w3_conns, "hold_s": p.w3_hold},
                    "result": summary,
                }
            )

    # --------------------------------------------------------------------------------- LLM streams

    def streams(
        self,
        workload: str,
        target: targets.LlmTarget,
        upstream: tuple[int, int],
        n: int,
        tokens: int,
        rep: int = 0,
    ) -> Record:
        p = self.plan
        upstream_port, upstream_pid = upstream
        with targets.start_llm(target, upstream_port, self.logs) as (port, pids):
            base = ["-p", str(port), "-P", target.path, "-m", "POST"]
            for header in target.headers:
                base += ["-H", header]
            # warm-up: a few short streams so imports, connection pools and JIT are ready
            warmup = [*base, "-b", target.body % 5, "-c", "3", "-r", "0.1", "-E", "5", "-d", "10"]
            self._sseload(warmup, 20, measure=False)
            cap = p.w4_ramp + tokens / p.w4_rate + 20
            cpu0 = _cpu_seconds(upstream_pid)
            summary = self._sseload(
                [
                    *base,
                    "-b",
                    target.body % tokens,
                    "-c",
                    str(n),
                    "-r",
                    str(p.w4_ramp),
                    "-E",
                    str(tokens),
                    "-d",
                    f"{cap:g}",
                    "-S",
                    ",".join(map(str, pids)),
                    "-L",
                    f"{workload}-{target.name}-{n}",
                ],
                budget_s=cap,
            )
            upstream_cpu = 100 * (_cpu_seconds(upstream_pid) - cpu0) / max(summary["window_s"], 1e-9)
        record = {
            "workload": workload,
            "target": target.name,
            "title": target.title,
            "rep": rep,
            "step": n,
            "params": {"streams": n, "tokens": tokens, "rate": p.w4_rate, "ramp_s": p.w4_ramp},
            "result": summary,
            "upstream_cpu_pct": round(upstream_cpu, 1),
        }
        record["pass"] = w4_pass(summary, n)
        s = summary["streams"]
        self._say(
            f"{workload} {target.name} N={n}: tokens={s['token_delivery']:.4f} completed={s['completed']} "
            f"p99={summary['latency_ms']['p99']} ms ttft_p99={s['ttft_ms']['p99']} ms "
            f"cpu={summary['server']['cpu_pct']}% pass={record['pass']}"
        )
        return self._record(record)

    def w4(self, target: targets.LlmTarget) -> None:
        """Raise N until two steps in a row fail (as W2 does: one unlucky run at the boundary does
        not end the search); confirm the highest passing N over ``reps`` runs."""
        self._highest_n("w4", target, self.plan.w4_steps.get(target.name, ()))

    def w6(self, target: targets.LlmTarget) -> None:
        """W4's search, through an OpenAI Chat Completions front (ssegate's door, LiteLLM's proxy)
        in front of the fake upstream's OpenAI side."""
        self._highest_n("w6", target, self.plan.w6_steps.get(target.name, ()))

    def _highest_n(self, workload: str, target: targets.LlmTarget, steps: tuple[int, ...]) -> None:
        p = self.plan
        with targets.start_upstream(self.logs, p.w4_tokens, p.w4_rate) as upstream:
            passing = step_up(
                steps, lambda n: bool(self.streams(workload, target, upstream, n, p.w4_tokens)["pass"])
            )
            self._confirm(
                passing,
                lambda n, rep: bool(
                    self.streams(workload, target, upstream, n, p.w4_tokens, rep=rep)["pass"]
                ),
            )

    def w5(self, gateway: targets.LlmTarget) -> None:
        """TTFT through the gateway vs. straight from the same upstream, same load, alternating."""
        p = self.plan
        with targets.start_upstream(self.logs, p.w5_tokens, p.w4_rate) as upstream:
            for rep in range(p.reps):
                for target in (targets.LLM_DIRECT, gateway):
                    self.streams("w5", target, upstream, p.w5_streams, p.w5_tokens, rep=rep)


def speed_probe_moment(step: str) -> str:
    """When a machine-speed reading was taken, in words: "before W4", "at the end"."""
    return "at the end" if step == SPEED_PROBE_END else f"before {step.upper()}"


def python_loop_ms() -> float:
    """Milliseconds for a fixed pure-Python loop, the best of ``SPEED_PROBE_TIMES``: lower is
    faster. The machine is shared, and the same code runs at different speeds from hour to hour
    (a gateway's CPU per token in W4 by up to 1.5x), so each run says how fast the machine was."""
    best = float("inf")
    for _ in range(SPEED_PROBE_TIMES):
        started = time.perf_counter()
        table: dict[int, int] = {}
        for i in range(SPEED_PROBE_ROUNDS):
            table[i & 1023] = i * 3 + 1
        best = min(best, time.perf_counter() - started)
    return 1000 * best


def step_up(steps: Iterable[T], passes: Callable[[T], bool]) -> list[T]:
    """The steps that pass, tried in order until two in a row fail: one unlucky run at the
    boundary does not end the search (the confirmation then asks a majority of runs)."""
    passing: list[T] = []
    fails = 0
    for step in steps:
        if passes(step):
            passing.append(step)
            fails = 0
            continue
        fails += 1
        if fails == 2:
            break
    return passing


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _box_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from the first line of /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _busy_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return 100.0 * (os.cpu_count() or 1) * (after[0] - before[0]) / total if total else 0.0


def wait_for_quiet(max_wait_s: float = QUIET_MAX_WAIT_S) -> dict[str, float]:
    """Wait (bounded) until the rest of the machine is nearly idle: the box is shared and noisy."""
    started = time.monotonic()
    busy = 0.0
    while True:
        before = _box_ticks()
        time.sleep(QUIET_SAMPLE_S)
        busy = _busy_pct(before, _box_ticks())
        waited = time.monotonic() - started
        if busy <= QUIET_BUSY_PCT or waited >= max_wait_s:
            return {"busy_before_pct": round(busy, 1), "quiet_wait_s": round(waited, 1)}


def w2_sustained(summary: dict[str, Any], subs: int) -> bool:
    errors = sum(summary["errors"].values())
    return bool(
        summary["connections_ok"] == subs
        and errors == 0
        and summary["latency_ms"]["p99"] <= W2_MAX_P99_MS
        and summary.get("delivery_ratio", 0) >= W2_MIN_DELIVERY
        and summary["pub"]["backpressure"] <= W2_MAX_BACKPRESSURE
        and summary["pub"]["errors"] == 0
    )


def w4_pass(summary: dict[str, Any], n: int) -> bool:
    s = summary["streams"]
    return bool(
        summary["latency_ms"]["p99"] <= W4_MAX_P99_MS
        and s["ttft_ms"]["p99"] <= W4_MAX_TTFT_P99_MS
        and s["token_delivery"] >= W4_MIN_TOKENS
        and s["completed"] == n
        and s["stream_errors"] == 0
        and sum(summary["errors"].values()) == 0
    )


def median(values: Iterable[float]) -> float:
    items = list(values)
    return statistics.median(items) if items else float("nan")


def by(records: list[Record], **match: Any) -> list[Record]:
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def pick(records: list[Record], getter: Callable[[Record], float]) -> float:
    return median(getter(r) for r in records)
