"""The JS client as an npm package: packed by ``npm pack``, installed into a scratch project from the
tarball, then used as a user would: from Node, from TypeScript (its declarations), and in Chromium
through an import map, against a real ssegate server on another origin (CORS).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import tempfile
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ssegate.config import Settings
from ssegate.server.app import STATIC_DIR, create_app
from tests.browser.test_chat_page import server_text
from tests.support.browser import chromium
from tests.support.npm import JS_PACKAGE, ROOT, locked, node_modules, run
from tests.support.servers import serve_asgi

# npm and tsc on a busy 2-core machine take tens of seconds; the default 60 s is for one test.
pytestmark = pytest.mark.timeout(300)

FAST = {"demo_ttft": 0.0, "demo_tokens_per_second": 2000.0}
PACKED_FILES = {
    "README.md",
    "package.json",
    "ssegate.js",
    "sse-parser.js",
    "types/ssegate.d.ts",
    "types/sse-parser.d.ts",
}

NODE_MAIN = """\
import { createGatewayClient, isGenerationError, GENERATION_EVENT_TYPES } from "ssegate";
import { createParser } from "ssegate/sse-parser";

const parsed = [];
const parser = createParser({ onEvent: (event) => parsed.push(event) });
parser.feed("event: text\\ndata: {\\"delta\\": \\"x\\"}\\n\\n");

const gateway = createGatewayClient({ baseUrl: process.env.SSEGATE_URL });
const answer = gateway.generate({ messages: [{ role: "user", content: "hello from node" }] });
let text = "";
const types = [];
for await (const event of answer) {
  types.push(event.type);
  if (event.type === "text") text += event.data.delta;
  if (isGenerationError(event)) throw new Error(event.data.code);
}
const last = await answer.done;
console.log(JSON.stringify({
  id: answer.generationId, text, types, last: last?.type, parsed, vocabulary: GENERATION_EVENT_TYPES,
}));
"""

# A TypeScript user's code. Each @ts-expect-error line must be an error: were the declarations
# missing or `any`, tsc would report the directive unused and fail.
TS_CONSUMER = """\
import {
  createGatewayClient, isGenerationError, openEventStream,
  type GatewayClient, type GenerationEvent, type StreamState,
} from "ssegate";
import { createParser, type SSEEvent } from "ssegate/sse-parser";

const gateway: GatewayClient = createGatewayClient({ baseUrl: "http://127.0.0.1:8000" });

export async function read(prompt: string): Promise<string> {
  let text = "";
  const answer = gateway.generate({ messages: [{ role: "user", content: prompt }], max_tokens: 64 });
  for await (const event of answer) {
    if (event.type === "text") text += event.data.delta;
    if (event.type === "tool_call" && event.data.phase === "start") text += event.data.name;
    if (event.type === "tool_call" && event.data.phase === "end") text += JSON.stringify(event.data.input);
    if (isGenerationError(event)) throw new Error(`${event.data.code}: ${event.data.message}`);
  }
  return text;
}

export function describe(event: GenerationEvent): string {
  switch (event.type) {
    case "done":
      return event.data.finish_reason;
    case "error":
      return event.data.retryable ? "try again" : event.data.code;
    default:
      return event.type;
  }
}

const state: StreamState = openEventStream("/v1/topics/news/events").state;
const parser = createParser({ onEvent: (event: SSEEvent) => event.data.length });
parser.feed(state);

// @ts-expect-error: a text event's delta is a string
export const wrongDelta: number = ({} as Extract<GenerationEvent, { type: "text" }>).data.delta;
// @ts-expect-error: messages are required
gateway.generate({ model: "x" });
// @ts-expect-error: there is no such transport
openEventStream("/x", { transport: "websocket" });
"""

TS_CONFIG = {
    "compilerOptions": {
        "strict": True,
        "noEmit": True,
        "target": "ES2022",
        "module": "NodeNext",
        "moduleResolution": "NodeNext",
        "lib": ["ES2022", "DOM", "DOM.Iterable"],
        "types": [],
    },
    "files": ["check.ts"],
}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ssegate from npm</title>
<script type="importmap">
{"imports": {"ssegate": "/node_modules/ssegate/ssegate.js",
             "ssegate/sse-parser": "/node_modules/ssegate/sse-parser.js"}}
</script></head><body><pre id="answer"></pre></body></html>
"""

IN_PAGE = """async (baseUrl) => {
  const { createGatewayClient } = await import('ssegate');
  const { createParser } = await import('ssegate/sse-parser');
  const gateway = createGatewayClient({ baseUrl });
  const answer = gateway.generate({ messages: [{ role: 'user', content: 'hello from chromium' }] });
  const out = document.getElementById('answer');
  for await (const event of answer) {
    if (event.type === 'text') out.textContent += event.data.delta;
  }
  const last = await answer.done;
  return { id: answer.generationId, text: out.textContent, last: last.type,
           parser: typeof createParser };
}"""


@dataclass(frozen=True)
class Installed:
    tarball: Path
    packed: set[str]
    project: Path  # the scratch project that installed the tarball

    @property
    def module_dir(self) -> Path:
        return self.project / "node_modules" / "ssegate"


def packed_tarball() -> tuple[Path, set[str]]:
    """``npm pack`` of clients/js, made once per content of the package (parallel test workers and
    later runs share it): the tarball and the files in it."""
    sources = sorted(p for p in JS_PACKAGE.iterdir() if p.is_file() and p.suffix in {".js", ".json", ".md"})
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sources)).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"ssegate-npm-pack-{digest}"
    with locked(JS_PACKAGE):
        listing = out / "files.json"
        if not listing.exists():
            out.mkdir(exist_ok=True)
            packed = json.loads(run(["npm", "pack", "--json", "--pack-destination", str(out)], JS_PACKAGE))[0]
            (out / "tarball").write_text(packed["filename"])
            listing.write_text(json.dumps([f["path"] for f in packed["files"]]))
    return out / (out / "tarball").read_text(), set(json.loads(listing.read_text()))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The packed and installed package. Packing runs `tsc` (prepack) with checkJs, strict and
    noEmitOnError: a type error in the package's source fails here."""
    node_modules(JS_PACKAGE)  # typescript, for the declarations `npm pack` builds
    tarball, files = packed_tarball()
    project = tmp_path_factory.mktemp("scratch-app")
    (project / "package.json").write_text(
        json.dumps({"name": "scratch-app", "private": True, "type": "module"})
    )
    run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", str(tarball)], project)
    return Installed(tarball, files, project)


def test_js_package_tarball_holds_the_module_its_types_and_readme(installed: Installed) -> None:
    assert installed.packed == PACKED_FILES
    manifest = json.loads((installed.module_dir / "package.json").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert manifest["version"] == project["version"]  # one version for the server and its clients
    assert manifest["exports"]["."] == {"types": "./types/ssegate.d.ts", "default": "./ssegate.js"}
    declarations = (installed.module_dir / "types" / "ssegate.d.ts").read_text()
    for name in ("createGatewayClient", "openEventStream", "GenerationEvent", "isGenerationError"):
        assert name in declarations
    # The stream's machinery is private to TypeScript users: not offered by their editor.
    assert "private _controller;" in declarations
    assert "private _readFetch;" in declarations


async def test_js_package_is_the_file_the_chat_page_serves(installed: Installed) -> None:
    # One file: the page's static copy is a link to the package's source, and what the server
    # sends is byte for byte what npm installed.
    for name in ("ssegate.js", "sse-parser.js"):
        assert (STATIC_DIR / name).resolve() == (JS_PACKAGE / name).resolve()
    async with serve_asgi(create_app(Settings())) as url, httpx.AsyncClient(base_url=url) as client:
        for name in ("ssegate.js", "sse-parser.js"):
            served = await client.get(f"/static/{name}")
            assert served.status_code == 200
            assert served.content == (installed.module_dir / name).read_bytes()


async def test_js_package_streams_a_generation_from_node(installed: Installed, tmp_path: Path) -> None:
    (installed.project / "main.mjs").write_text(NODE_MAIN)
    async with serve_asgi(create_app(Settings(**FAST))) as url:
        node = await asyncio.create_subprocess_exec(
            "node",
            "main.mjs",
            cwd=installed.project,
            env={**os.environ, "SSEGATE_URL": url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(node.communicate(), 60)
        assert node.returncode == 0, stderr.decode()
        result: dict[str, Any] = json.loads(stdout)
        expected_text = await server_text(url, result["id"])

    assert result["text"] == expected_text
    assert result["text"]
    assert result["types"][0] == "start"
    assert result["last"] == "done"
    assert result["parsed"] == [{"type": "text", "data": '{"delta": "x"}', "id": ""}]


def test_js_package_declarations_type_check_a_typescript_user(installed: Installed) -> None:
    # One tsc run over two files: the right use (check.ts) must pass, the wrong one (wrong.ts) must
    # fail, so declarations that accept anything cannot pass this test.
    (installed.project / "check.ts").write_text(TS_CONSUMER)
    (installed.project / "wrong.ts").write_text(
        'import { createGatewayClient } from "ssegate";\n'
        'createGatewayClient().follow("id", {\n'
        '  onEvent: (e) => e.type === "text" && e.data.delta.toFixed(),\n'
        "});\n"
    )
    (installed.project / "tsconfig.json").write_text(
        json.dumps({**TS_CONFIG, "files": ["check.ts", "wrong.ts"]})
    )
    tsc = node_modules(JS_PACKAGE) / ".bin" / "tsc"
    done = subprocess.run(
        [str(tsc), "-p", "tsconfig.json", "--pretty", "false"],
        cwd=installed.project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    errors = [line for line in done.stdout.splitlines() if ": error TS" in line]
    assert done.returncode != 0
    assert errors, done.stdout
    assert all(line.startswith("wrong.ts(3,") for line in errors), done.stdout
    assert "toFixed" in errors[0]


async def page_server(project: Path) -> AsyncIterator[str]:
    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE)

    app = Starlette(
        routes=[
            Route("/", page),
            Mount("/node_modules", StaticFiles(directory=str(project / "node_modules"))),
        ]
    )
    async with serve_asgi(app) as url:
        yield url


@pytest.mark.browser
async def test_js_package_runs_in_chromium_from_another_origin(installed: Installed) -> None:
    # A front-end app on its own origin (a bundler's dev server, say) imports the installed package
    # and talks to ssegate across origins.
    async for page_url in page_server(installed.project):
        settings = Settings(**FAST, cors_origins=page_url)
        async with serve_asgi(create_app(settings)) as api_url, chromium() as browser:
            page = await browser.new_page()
            await page.goto(page_url)
            result: dict[str, Any] = await page.evaluate(IN_PAGE, api_url)
            expected_text = await server_text(api_url, result["id"])

    assert result["last"] == "done"
    assert result["text"] == expected_text
    assert result["text"]
    assert result["parser"] == "function"


__all__ = ["Browser"]
