"""The servers under test: ssegate and its peers, how to install and start each, their versions.

Peers are installed at bench time from the registries (apt, PyPI, npm) into ``SCRATCH``; nothing
of theirs is vendored. Every server runs as one process (nginx: one worker) on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / "peers"
SCRATCH = Path(os.environ.get("SSEGATE_BENCH_SCRATCH", "/tmp/ssegate-bench"))
PEER_VENV = SCRATCH / "venv"
NODE_DIR = SCRATCH / "node"
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
VENV_BIN = Path(sys.executable).parent

PY_PEER_PACKAGES = ["sse-starlette", "uvicorn", "uvloop", "httptools", "fastapi", "anthropic"]
# W6's peer: LiteLLM's proxy, in a venv of its own (its pins clash with the other peers').
LITELLM_VENV = SCRATCH / "litellm-venv"
LITELLM_PACKAGE = "litellm[proxy]"
# Keeps LiteLLM offline (no cost-map download at start, no telemetry) and quiet (no per-request log).
LITELLM_ENV = {
    "LITELLM_OFFLINE_MODE": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "DISABLE_SCHEMA_UPDATE": "True",
}
# LiteLLM's proxy refuses to start without a master key; the bench's requests carry it.
LITELLM_MASTER_KEY = "sk-ssegate-bench-0123456789abcdef0123456789abcdef"
# Its start-up (imports, router, the bundled cost map) takes ~30 s on a loaded 2-core machine.
LITELLM_READY_TIMEOUT_S = 180.0
NODE_PEER_PACKAGES = ["express", "better-sse", "@anthropic-ai/sdk"]
TOPIC = "bench"


@dataclass(frozen=True)
class FanoutTarget:
    """A pub/sub server: POST ``pub_path`` publishes, GET ``sub_path`` subscribes (EventSource)."""

    name: str
    title: str
    sub_path: str
    pub_path: str
    # "raw": the publish body is the event; "data": ssegate's {"data": <event>} envelope
    pub_format: str = "raw"
    # ssegate only: its log in a Redis the bench starts (else the embedded one), and its processes
    redis: bool = False
    workers: int = 1


@dataclass(frozen=True)
class LlmTarget:
    """A gateway in front of the fake Anthropic upstream: POST ``path`` streams one generation."""

    name: str
    title: str
    path: str
    body: str
    headers: tuple[str, ...] = field(default=())
    # ssegate only, as for FanoutTarget: its log in a Redis the bench starts, and its processes
    redis: bool = False
    workers: int = 1


SSEGATE = FanoutTarget(
    "ssegate", "ssegate", f"/v1/topics/{TOPIC}/events", f"/v1/topics/{TOPIC}/events", pub_format="data"
)
# Scaling out: the same server over Redis Streams, in one process and in two (W1/W2 only).
SSEGATE_SCALE = tuple(
    FanoutTarget(
        f"ssegate-redis-{n}w",
        f"ssegate, Redis, {n} worker{'s' if n > 1 else ''}",
        SSEGATE.sub_path,
        SSEGATE.pub_path,
        pub_format="data",
        redis=True,
        workers=n,
    )
    for n in (1, 2)
)
FANOUT_PEERS = (
    FanoutTarget("nchan", "Nchan (nginx, C)", "/sub", "/pub"),
    FanoutTarget("express", "Express (naive loop)", "/sub", "/pub"),
    FanoutTarget("bettersse", "better-sse", "/sub", "/pub"),
    FanoutTarget("starlette", "sse-starlette", "/sub", "/pub"),
)

_PROMPT = '"messages":[{"role":"user","content":"Write a long answer."}]'
LLM_SSEGATE = LlmTarget(
    "ssegate",
    "ssegate",
    "/v1/generations",
    '{"provider":"anthropic","max_tokens":%d,' + _PROMPT + "}",
)
# Scaling out LLM streams: the same gateway over Redis Streams, one process and two (W4 only).
LLM_SSEGATE_SCALE = tuple(
    LlmTarget(
        f"ssegate-redis-{n}w",
        f"ssegate, Redis, {n} worker{'s' if n > 1 else ''}",
        LLM_SSEGATE.path,
        LLM_SSEGATE.body,
        redis=True,
        workers=n,
    )
    for n in (1, 2)
)
LLM_PEERS = (
    LlmTarget("express-sdk", "Express + @anthropic-ai/sdk", "/v1/chat", '{"max_tokens":%d,' + _PROMPT + "}"),
    LlmTarget(
        "starlette-sdk",
        "FastAPI + sse-starlette + anthropic",
        "/v1/chat",
        '{"max_tokens":%d,' + _PROMPT + "}",
    ),
    # Not a peer: the least any Python relay does per token here, the bound for one process.
    LlmTarget(
        "python-floor",
        "bare Python relay (reference)",
        "/v1/chat",
        '{"max_tokens":%d,' + _PROMPT + "}",
    ),
)
# W6: the same fake upstream speaking OpenAI's Chat Completions; one request shape for both proxies.
_OPENAI_BODY = '{"model":"gpt-fake","stream":true,"max_tokens":%d,' + _PROMPT + "}"
OPENAI_MODEL = "gpt-fake"
LLM_SSEGATE_OPENAI = LlmTarget("ssegate-openai", "ssegate, OpenAI door", "/v1/chat/completions", _OPENAI_BODY)
W6_PEERS = (
    LlmTarget(
        "litellm",
        "LiteLLM proxy",
        "/v1/chat/completions",
        _OPENAI_BODY,
        headers=(f"Authorization: Bearer {LITELLM_MASTER_KEY}",),
    ),
)
# Reference targets: shown beside the peers, never counted among them.
REFERENCES = frozenset({"python-floor", "direct"})
# The client reads the fake upstream itself: the floor that W5's overhead is measured against.
LLM_DIRECT = LlmTarget(
    "direct",
    "direct from upstream",
    "/v1/messages",
    '{"model":"claude-fake","stream":true,"max_tokens":%d,' + _PROMPT + "}",
)


# Benchmark settings for ssegate: its protective limits lifted (the workloads open 10,000 streams and
# start 1,600 generations from one client), and no per-request access log line (the peers log none).
SSEGATE_BENCH_ENV = {
    "SSEGATE_MAX_STREAMS_PER_PRINCIPAL": "1000000",
    "SSEGATE_MAX_STREAMS_TOTAL": "1000000",
    "SSEGATE_GENERATION_STARTS_PER_MINUTE": "0",
    "SSEGATE_ACCESS_LOG": "0",
    "SSEGATE_DRAIN_TIMEOUT": "2",
    "SSEGATE_KEEPALIVE_INTERVAL": "15",
}


def ssegate_available() -> bool:
    """True once the server package and the ``ssegate`` command exist (it is built alongside)."""
    return (REPO / "src/ssegate/server/main.py").exists() and (VENV_BIN / "ssegate").exists()


# ------------------------------------------------------------------------------------------ setup


def _run(argv: list[str], cwd: Path | None = None) -> bool:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        print(
            f"bench: {' '.join(argv)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}",
            file=sys.stderr,
        )
    return result.returncode == 0


def setup_peers(names: set[str]) -> set[str]:
    """Install what the chosen peers need (idempotent); returns the names that are ready."""
    ready: set[str] = set()
    if "nchan" in names:
        if not NCHAN_MODULE.exists() and shutil.which("apt-get") and os.geteuid() == 0:
            _run(["apt-get", "install", "-y", "-q", "nginx-light", "libnginx-mod-nchan"])
        if NCHAN_MODULE.exists() and shutil.which("nginx"):
            ready.add("nchan")
    if names & {"starlette", "starlette-sdk"}:
        SCRATCH.mkdir(parents=True, exist_ok=True)
        ok = (PEER_VENV / "bin/python").exists() or _run(["python3", "-m", "venv", str(PEER_VENV)])
        probe = [str(PEER_VENV / "bin/python"), "-c", "import sse_starlette, fastapi, anthropic, uvloop"]
        if ok and subprocess.run(probe, capture_output=True, check=False).returncode != 0:
            ok = _run([str(PEER_VENV / "bin/pip"), "install", "-q", *PY_PEER_PACKAGES])
        if ok:
            ready |= names & {"starlette", "starlette-sdk"}
    if "python-floor" in names and ssegate_available():
        ready.add("python-floor")  # the project's own venv has what it needs (uvloop, orjson)
    if "litellm" in names:
        SCRATCH.mkdir(parents=True, exist_ok=True)
        python = LITELLM_VENV / "bin/python"
        ok = python.exists() or _run(["python3", "-m", "venv", str(LITELLM_VENV)])
        probe = [str(python), "-c", "import litellm.proxy.proxy_server"]
        env = {**os.environ, **LITELLM_ENV}
        if ok and subprocess.run(probe, capture_output=True, check=False, env=env).returncode != 0:
            ok = _run([str(LITELLM_VENV / "bin/pip"), "install", "-q", LITELLM_PACKAGE])
        if ok:
            ready.add("litellm")
    if names & {"express", "bettersse", "express-sdk"} and shutil.which("npm"):
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        ok = True
        if not all((NODE_DIR / "node_modules" / pkg / "package.json").exists() for pkg in NODE_PEER_PACKAGES):
            if not (NODE_DIR / "package.json").exists():
                ok = _run(["npm", "init", "-y"], cwd=NODE_DIR)
            ok = ok and _run(["npm", "install", "--silent", *NODE_PEER_PACKAGES], cwd=NODE_DIR)
        if ok:
            ready |= names & {"express", "bettersse", "express-sdk"}
    return ready


# ------------------------------------------------------------------------------------------ start


def _node_env() -> dict[str, str]:
    return {"NODE_PATH": str(NODE_DIR / "node_modules")}


def _nchan_argv(port: int, workdir: Path) -> list[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    conf = (PEERS_DIR / "nchan.conf.in").read_text()
    conf = conf.replace("@DIR@", str(workdir)).replace("@PORT@", str(port))
    (workdir / "nginx.conf").write_text(conf)
    return ["nginx", "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-e", str(workdir / "error.log")]


@contextlib.contextmanager
def start_fanout(target: FanoutTarget, logs: Path) -> Iterator[tuple[int, list[int]]]:
    """Start one fan-out server on a fresh port; yields (port, PIDs to sample)."""
    port = procs.free_port()
    log = logs / f"{target.name}.log"
    env: dict[str, str] = {}
    if target.name.startswith("ssegate"):
        with _ssegate_fanout(target, port, log) as pids:
            yield port, pids
        return
    if target.name == "nchan":
        argv = _nchan_argv(port, SCRATCH / f"nchan-{port}")
    elif target.name == "starlette":
        argv = [str(PEER_VENV / "bin/python"), str(PEERS_DIR / "starlette_app.py"), str(port)]
    elif target.name in ("express", "bettersse"):
        argv = ["node", str(PEERS_DIR / f"{target.name}_app.js"), str(port)]
        env = _node_env()
    else:
        raise ValueError(target.name)
    with procs.running(argv, port, env=env, log=log) as proc:
        yield port, procs.descendants(proc.pid)


@contextlib.contextmanager
def _ssegate_fanout(target: FanoutTarget, port: int, log: Path) -> Iterator[list[int]]:
    # no keys: local mode; keep-alive as the peers' (15 s), so W3 measures idle connections
    argv = [str(VENV_BIN / "ssegate"), "serve", "--port", str(port)]
    env = {**SSEGATE_BENCH_ENV, "ANTHROPIC_API_KEY": "", "OPENAI_API_KEY": ""}
    with _ssegate_processes(target.name, target.redis, target.workers, argv, port, env, log) as pids:
        yield pids


@contextlib.contextmanager
def _ssegate_processes(
    name: str, redis: bool, workers: int, argv: list[str], port: int, env: dict[str, str], log: Path
) -> Iterator[list[int]]:
    """``ssegate serve`` (``argv``), over a fresh Redis of its own when ``redis``; yields the PIDs
    to sample: the server's processes, and Redis's (part of the deployment: its CPU and memory
    count with the server's)."""
    with contextlib.ExitStack() as stack:
        redis_pids: list[int] = []
        if redis:
            redis_port = procs.free_port()
            server = stack.enter_context(
                procs.running(
                    [
                        "redis-server",
                        "--port",
                        str(redis_port),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    redis_port,
                    log=log.with_name(f"{name}-redis.log"),
                )
            )
            redis_pids = [server.pid]
            argv = [*argv, "--redis", f"redis://127.0.0.1:{redis_port}/0", "--workers", str(workers)]
        proc = stack.enter_context(procs.running(argv, port, env=env, log=log))
        if workers > 1:
            procs.wait_for_workers(proc, port, workers)
        yield procs.descendants(proc.pid) + redis_pids


@contextlib.contextmanager
def start_upstream(logs: Path, tokens: int, rate: float) -> Iterator[tuple[int, int]]:
    """The fake Anthropic upstream; yields (port, PID)."""
    port = procs.free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.fake_anthropic_upstream",
        "--port",
        str(port),
        "--tokens",
        str(tokens),
        "--rate",
        str(rate),
    ]
    with procs.running(argv, port, log=logs / "fake_upstream.log", cwd=REPO) as proc:
        yield port, proc.pid


@contextlib.contextmanager
def start_llm(target: LlmTarget, upstream_port: int, logs: Path) -> Iterator[tuple[int, list[int]]]:
    """Start one gateway in front of the fake upstream; yields (port, PIDs to sample)."""
    upstream = f"http://127.0.0.1:{upstream_port}"
    if target.name == "direct":
        yield upstream_port, []
        return
    port = procs.free_port()
    env: dict[str, str] = {}
    if target.name.startswith("ssegate"):
        argv = [str(VENV_BIN / "ssegate"), "serve", "--port", str(port), "--provider", "anthropic"]
        env = {**SSEGATE_BENCH_ENV, "ANTHROPIC_API_KEY": "dummy", "SSEGATE_ANTHROPIC_BASE_URL": upstream}
        if target is LLM_SSEGATE_OPENAI:  # W6: the OpenAI door in front of the OpenAI-speaking fake
            argv[-1] = "openai"
            env = {
                **SSEGATE_BENCH_ENV,
                "OPENAI_API_KEY": "dummy",
                "SSEGATE_OPENAI_BASE_URL": f"{upstream}/v1",
            }
        log = logs / f"{target.name}.log"
        with _ssegate_processes(target.name, target.redis, target.workers, argv, port, env, log) as pids:
            yield port, pids
        return
    if target.name == "express-sdk":
        argv = ["node", str(PEERS_DIR / "llm_express_peer.js"), str(port), upstream]
        env = _node_env()
    elif target.name == "starlette-sdk":
        argv = [str(PEER_VENV / "bin/python"), str(PEERS_DIR / "llm_starlette_peer.py"), str(port), upstream]
    elif target.name == "litellm":
        argv = _litellm_argv(port, upstream, SCRATCH / f"litellm-{port}")
        log = logs / "litellm.log"
        with procs.running(
            argv, port, env=LITELLM_ENV, log=log, ready_timeout=LITELLM_READY_TIMEOUT_S
        ) as proc:
            yield port, procs.descendants(proc.pid)
        return
    elif target.name == "python-floor":
        relay = PEERS_DIR / "llm_floor_relay.py"
        argv = [str(VENV_BIN / "python"), str(relay), str(port), str(upstream_port)]
    else:
        raise ValueError(target.name)
    with procs.running(argv, port, env=env, log=logs / f"{target.name}.log") as proc:
        yield port, procs.descendants(proc.pid)


def _litellm_argv(port: int, upstream: str, workdir: Path) -> list[str]:
    """LiteLLM's proxy, one process, its one model routed to the fake upstream (``openai/`` prefix:
    an OpenAI-compatible server at ``api_base``); no master key, database or callbacks."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "model_list": [
            {
                "model_name": OPENAI_MODEL,
                "litellm_params": {
                    "model": f"openai/{OPENAI_MODEL}",
                    "api_base": f"{upstream}/v1",
                    "api_key": "dummy",
                },
            }
        ],
        "litellm_settings": {"drop_params": True, "set_verbose": False},
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
    }
    # JSON is YAML: no YAML writer needed here
    (workdir / "config.yaml").write_text(json.dumps(config, indent=2))
    litellm = LITELLM_VENV / "bin/litellm"
    return [
        str(litellm),
        "--config",
        str(workdir / "config.yaml"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


# ------------------------------------------------------------------------------------------ versions


def _first_line(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return ((result.stdout or result.stderr).strip().splitlines() or ["?"])[0]


def _py_versions(python: Path, packages: list[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {'python': sys.version.split()[0]}\n"
        f"for p in {packages!r}:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    try:
        result = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
        parsed: dict[str, str] = json.loads(result.stdout)
        return parsed
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}


def versions() -> dict[str, str]:
    """Versions of everything measured, for the results page."""
    out: dict[str, str] = {}
    ours = _py_versions(
        Path(sys.executable), ["ssegate", "starlette", "uvicorn", "uvloop", "httptools", "anthropic"]
    )
    out.update({f"{k} (ssegate venv)": v for k, v in ours.items()})
    if PEER_VENV.exists():
        theirs = _py_versions(PEER_VENV / "bin/python", [*PY_PEER_PACKAGES, "starlette"])
        out.update({f"{k} (peer venv)": v for k, v in theirs.items()})
    if LITELLM_VENV.exists():
        theirs = _py_versions(
            LITELLM_VENV / "bin/python", ["litellm", "uvicorn", "openai", "httpx", "aiohttp"]
        )
        out.update({f"{k} (litellm venv)": v for k, v in theirs.items()})
    out["nginx"] = _first_line(["nginx", "-v"])
    out["libnginx-mod-nchan"] = _first_line(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-nchan"])
    out["node"] = _first_line(["node", "--version"])
    for pkg in NODE_PEER_PACKAGES:
        manifest = NODE_DIR / "node_modules" / pkg / "package.json"
        if manifest.exists():
            out[f"{pkg} (npm)"] = str(json.loads(manifest.read_text()).get("version"))
    out["gcc"] = _first_line(["gcc", "--version"])
    return out
