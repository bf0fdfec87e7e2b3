"""``python -m bench.run --ablate``: does each fast path earn its place? (docs/performance.md)

In one run, each workload a shortcut claims to help is measured with every shortcut on, with all
of them off (``SSEGATE_FAST_PATHS=0``), and with each claiming shortcut off alone
(``SSEGATE_FAST_PATHS=-name``), so the figures share one machine and one hour. Each measurement is
one fixed-size run (no stepping up, as W2 and W4 do in the full bench), repeated ``reps`` times with
the variants interleaved (on, -a, -b, off, on, -a, ...), so a slow minute of a shared machine falls
on every variant alike; the table gives medians.

Writes ``<out>/results.md`` and ``<out>/raw/<timestamp>.jsonl`` (default ``docs/benchmarks/ablation``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from bench import targets
from bench.workloads import SPEED_PROBE_END, Plan, Record, Runner, build_sseload, by, median

FAST_PATHS_ENV = "SSEGATE_FAST_PATHS"
ALL_ON = "all on"
ALL_OFF = "all off"

# What each shortcut claims to buy, by workload (the "buys" column of docs/performance.md).
CLAIMS: dict[str, tuple[str, ...]] = {
    "w1": ("live_socket",),
    "w2": ("live_socket",),
    "w3": ("slim_protocol", "served_app", "held_streams"),
    "w4": ("accept", "upstream_lane", "body_push"),
    "w5": ("direct_attempt", "held_streams"),
}
# A shortcut that buys less than this on every workload it claims is a candidate for deletion (issue 25).
EARNS_PCT = 5.0


@dataclass(frozen=True)
class Metric:
    """One figure of a workload's records: its name, unit, how to read it, and whether less is better."""

    name: str
    unit: str
    read: Callable[[list[Record]], float]
    lower_is_better: bool = True


def _each(records: list[Record], getter: Callable[[Record], float]) -> float:
    return median(getter(r) for r in records)


def _cpu_us_per_event(records: list[Record]) -> float:
    return _each(
        [r for r in records if r["result"]["events_per_s"] > 0],
        lambda r: 1e4 * r["result"]["server"]["cpu_pct"] / r["result"]["events_per_s"],
    )


def _w5_overhead(records: list[Record], pct: str) -> float:
    """Gateway TTFT minus direct TTFT, per rep (the pair measured back to back), median over reps."""
    gaps = []
    for gateway in by(records, target="ssegate"):
        direct = by(records, target="direct", rep=gateway["rep"], variant=gateway["variant"])
        if direct:
            ours = gateway["result"]["streams"]["ttft_ms"][pct]
            gaps.append(ours - direct[0]["result"]["streams"]["ttft_ms"][pct])
    return median(gaps)


METRICS: dict[str, tuple[Metric, ...]] = {
    "w1": (
        Metric("server CPU per event", "µs", _cpu_us_per_event),
        Metric("latency p99", "ms", lambda rs: _each(rs, lambda r: r["result"]["latency_ms"]["p99"])),
    ),
    "w2": (
        Metric(
            "delivered",
            "ev/s",
            lambda rs: _each(rs, lambda r: r["result"]["events_per_s"]),
            lower_is_better=False,
        ),
        Metric("server CPU per event", "µs", _cpu_us_per_event),
    ),
    "w3": (
        Metric(
            "memory per connection",
            "KiB",
            lambda rs: _each(rs, lambda r: r["result"]["server"]["kb_per_conn"]),
        ),
    ),
    "w4": (
        Metric("gateway CPU per token", "µs", _cpu_us_per_event),
        Metric("TTFT p99", "ms", lambda rs: _each(rs, lambda r: r["result"]["streams"]["ttft_ms"]["p99"])),
        Metric("token latency p99", "ms", lambda rs: _each(rs, lambda r: r["result"]["latency_ms"]["p99"])),
    ),
    "w5": (
        Metric("TTFT overhead p50", "ms", lambda rs: _w5_overhead(rs, "p50")),
        Metric("TTFT overhead p99", "ms", lambda rs: _w5_overhead(rs, "p99")),
    ),
}


def variants(workload: str) -> list[tuple[str, str | None]]:
    """(label, SSEGATE_FAST_PATHS value) for one workload: all on, each claiming shortcut off, all off."""
    return [
        (ALL_ON, None),
        *((f"-{name}", f"-{name}") for name in CLAIMS[workload]),
        (ALL_OFF, "0"),
    ]


@contextmanager
def fast_paths(value: str | None) -> Iterator[None]:
    """The ssegate processes started inside see ``SSEGATE_FAST_PATHS=value`` (unset: None)."""
    before = os.environ.pop(FAST_PATHS_ENV, None)
    if value is not None:
        os.environ[FAST_PATHS_ENV] = value
    try:
        yield
    finally:
        os.environ.pop(FAST_PATHS_ENV, None)
        if before is not None:
            os.environ[FAST_PATHS_ENV] = before


def measure(runner: Runner, workload: str, plan: Plan) -> None:
    """Every variant of ``workload``, ``plan.reps`` times, interleaved."""
    p = plan
    say = Runner._say
    upstream_tokens = {"w4": p.w4_tokens, "w5": p.w5_tokens}.get(workload)
    with ExitStack() as stack:
        upstream = None
        if upstream_tokens:  # one fake upstream for every variant of the workload
            upstream = stack.enter_context(targets.start_upstream(runner.logs, upstream_tokens, p.w4_rate))
        for rep in range(p.reps):
            for label, value in variants(workload):
                say(f"--- ablation {workload} {label} (rep {rep + 1}/{p.reps})")
                runner.extra = {"variant": label, "rep": rep}
                with fast_paths(value):
                    if workload in ("w1", "w2"):
                        rate = p.w1_rate if workload == "w1" else p.ablate_w2_rate
                        subs = p.w1_subs if workload == "w1" else p.w2_subs
                        warmup = p.w1_warmup if workload == "w1" else p.w2_warmup
                        window = p.w1_window if workload == "w1" else p.w2_window
                        runner.fanout(workload, targets.SSEGATE, subs, rate, warmup, window, rep=rep)
                    elif workload == "w3":
                        runner.w3(targets.SSEGATE)
                    elif workload == "w4":
                        assert upstream is not None
                        runner.streams(
                            "w4", targets.LLM_SSEGATE, upstream, p.ablate_w4_n, p.w4_tokens, rep=rep
                        )
                    else:
                        assert upstream is not None
                        for target in (targets.LLM_DIRECT, targets.LLM_SSEGATE):
                            runner.streams("w5", target, upstream, p.w5_streams, p.w5_tokens, rep=rep)
    runner.extra = {}


def run(out: Path, plan: Plan, workloads: list[str], command: str) -> Path:
    """Measure, then write the tables; returns the results page."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = out / "raw" / f"{stamp}.jsonl"
    raw.parent.mkdir(parents=True, exist_ok=True)
    logs = targets.BENCH_DIR / "out/logs" / f"ablation-{stamp}"
    # The runner's own repetitions are one: the variants are repeated here, interleaved.
    runner = Runner(build_sseload(targets.BENCH_DIR / "out"), raw, logs, replace(plan, reps=1))
    failed: list[str] = []
    started = time.monotonic()
    for workload in workloads:
        runner.machine_speed(workload)
        try:
            measure(runner, workload, plan)
        except (RuntimeError, TimeoutError, OSError) as exc:
            failed.append(f"{workload}: run failed: {exc}")
            Runner._say(f"ablation {workload} failed: {exc}")
            runner.extra = {}
    runner.machine_speed(SPEED_PROBE_END)
    minutes = (time.monotonic() - started) / 60
    page = out / "results.md"
    page.write_text(render(runner.records, plan, workloads, command, failed, minutes))
    return page


def _pct(value: float, base: float, lower_is_better: bool) -> float:
    """How much worse ``value`` is than ``base``, in % (negative: better)."""
    if not base or base != base or value != value:
        return float("nan")
    change = 100 * (value - base) / abs(base)
    return change if lower_is_better else -change


def _fmt(value: float) -> str:
    if value != value:
        return "–"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"


def summary(records: list[Record], workloads: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """workload → variant → metric → median."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for workload in workloads:
        rows = by(records, workload=workload)
        if not rows:
            continue
        out[workload] = {
            label: {m.name: m.read(by(rows, variant=label)) for m in METRICS[workload]}
            for label, _value in variants(workload)
            if by(rows, variant=label)
        }
    return out


def costs(table: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """shortcut → workload → how much worse turning it off alone makes that workload's worst
    metric, in % of all on."""
    out: dict[str, dict[str, float]] = {}
    for workload, rows in table.items():
        on = rows.get(ALL_ON)
        for name in CLAIMS[workload]:
            off = rows.get(f"-{name}")
            if on is None or off is None:
                continue
            changes = [_pct(off[m.name], on[m.name], m.lower_is_better) for m in METRICS[workload]]
            known = [change for change in changes if change == change]  # NaN: not measured
            out.setdefault(name, {})[workload] = max(known) if known else float("nan")
    return out


def render(
    records: list[Record],
    plan: Plan,
    workloads: list[str],
    command: str,
    failed: list[str],
    minutes: float,
) -> str:
    p, w2_rate, w4_n = plan, plan.ablate_w2_rate, plan.ablate_w4_n
    table = summary(records, workloads)
    speeds = [r["result"]["python_loop_ms"] for r in by(records, workload="machine")]
    lines = [
        "# Fast paths, one at a time (ablation)",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d %H:%M %Z')}, {minutes:.0f} min. Versions: "
        + ", ".join(f"{k} {v}" for k, v in targets.versions().items())
        + ".",
        "",
        "Each workload a shortcut claims to help (docs/performance.md) is measured with every shortcut",
        "on, with each claiming shortcut off alone (`SSEGATE_FAST_PATHS=-name`; a shortcut that builds",
        "on it is off too: `-body_push` also turns `upstream_lane` off) and with all off",
        f"(`SSEGATE_FAST_PATHS=0`): {p.reps} fixed-size runs per variant, interleaved, medians. The sizes:",
        f"W1 {p.w1_subs:,} subscribers at {p.w1_rate:g} events/s ({p.w1_warmup:g} s + {p.w1_window:g} s);"
        f" W2 {p.w2_subs:,} subscribers at {w2_rate:g} events/s ({p.w2_warmup:g} s + {p.w2_window:g} s, one"
        f" step, not stepped up); W3 {p.w3_conns:,} idle subscribers held {p.w3_hold:g} s; W4 N={w4_n}"
        f" generations of {p.w4_tokens} tokens at {p.w4_rate:g}/s; W5 {p.w5_streams} streams of"
        f" {p.w5_tokens} tokens, gateway TTFT minus direct TTFT of the run just before it.",
        "Python speed of the machine (fixed loop, ms; lower is faster): "
        + " → ".join(_fmt(s) for s in speeds)
        + ".",
        "",
        "## What each shortcut buys",
        "",
        f"Turning it off alone makes its workloads this much worse (the worst of each workload's"
        f" figures, % of all on). Under {EARNS_PCT:g} % on every workload it claims: the issue's"
        " bar for deleting it (noise included: read with the tables below).",
        "",
        "| shortcut | " + " | ".join(w.upper() for w in workloads) + f" | ≥ {EARNS_PCT:g} % somewhere |",
        "|---|" + "---|" * len(workloads) + "---|",
    ]
    for name, by_workload in sorted(costs(table).items()):
        cells = [
            f"{by_workload[w]:+.1f} %" if w in by_workload and by_workload[w] == by_workload[w] else ""
            for w in workloads
        ]
        known = [v for v in by_workload.values() if v == v]
        verdict = "yes" if any(v >= EARNS_PCT for v in known) else "**no**" if known else "–"
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {verdict} |")
    for workload, rows in table.items():
        metrics = METRICS[workload]
        on = rows.get(ALL_ON, {})
        lines += [
            "",
            f"## {workload.upper()}",
            "",
            "| variant | " + " | ".join(f"{m.name} ({m.unit})" for m in metrics) + " |",
            "|---|" + "---|" * len(metrics),
        ]
        for label, values in rows.items():
            cells = []
            for m in metrics:
                cell = _fmt(values[m.name])
                if label != ALL_ON and m.name in on:
                    change = _pct(values[m.name], on[m.name], m.lower_is_better)
                    if change == change:
                        cell += (
                            " (±0 %)"
                            if round(change) == 0
                            else f" ({change:+.0f} % worse)"
                            if change > 0
                            else f" ({-change:.0f} % better)"
                        )
                cells.append(cell)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if failed:
        lines += ["", "## Not measured", "", *(f"- {f}" for f in failed)]
    return "\n".join(lines) + "\n"
