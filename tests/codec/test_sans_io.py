"""The codec is sans-IO: importing it must not load an event loop, sockets or HTTP/Redis clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys

IO_MODULES = ["asyncio", "socket", "httpx", "redis", "starlette", "uvicorn", "anyio", "ssl"]


def test_codec_import_loads_no_io_modules() -> None:
    script = "import json, sys, ssegate.codec; print(json.dumps(sorted(sys.modules)))"
    # Without coverage's start-up hook (make test measures subprocesses): it imports modules of its own.
    env = {name: value for name, value in os.environ.items() if not name.startswith("COVERAGE_")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    loaded = set(json.loads(result.stdout))
    assert "ssegate.codec" in loaded
    assert sorted(loaded & set(IO_MODULES)) == []
