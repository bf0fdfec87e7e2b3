"""The codec is sans-IO: importing it must not load an event loop, sockets or HTTP/Redis clients."""

from __future__ import annotations

import json
import subprocess
import sys

IO_MODULES = ["asyncio", "socket", "httpx", "redis", "starlette", "uvicorn", "anyio", "ssl"]


def test_codec_import_loads_no_io_modules() -> None:
    script = "import json, sys, ssegate.codec; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded = set(json.loads(result.stdout))
    assert "ssegate.codec" in loaded
    assert sorted(loaded & set(IO_MODULES)) == []
