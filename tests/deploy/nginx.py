"""Real nginx in front of real ssegate servers, configured by the shipped ``deploy/nginx.conf``.

Only the ``listen`` line and the upstream's ``server`` lines of the shipped file are rewritten (to
free ports), and the rewrite fails loudly if they are not found, so the tests exercise the very
directives users deploy. nginx runs as a non-daemon child with every path inside a temp dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.servers import free_port

NGINX = "/usr/sbin/nginx"
SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
# A free port can be taken by another test between our probe and nginx's bind: try again.
_START_ATTEMPTS = 3

_LISTEN = re.compile(r"^(\s*)listen 80;$", re.MULTILINE)
_UPSTREAM = re.compile(r"^upstream ssegate \{\n(?P<body>.*?)^\}", re.MULTILINE | re.DOTALL)
_ACCESS_LOG = re.compile(r"^(\s*access_log )/var/log/nginx/", re.MULTILINE)
_UPSTREAM_SERVER = re.compile(r"^(\s*)server 127\.0\.0\.1:\d+;\n", re.MULTILINE)

# The main file a distribution ships, reduced to what a non-root nginx in a temp dir needs.
_MAIN = """\
worker_processes 1;
events {{ worker_connections 512; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/ssegate.conf;
}}
"""


def nginx_available() -> bool:
    return shutil.which(NGINX) is not None


@dataclass(frozen=True)
class TLS:
    """A certificate and its key, for nginx to serve TLS and HTTP/2."""

    certificate: Path
    key: Path


# The shipped file's commented-out lines for serving browsers directly: TLS and HTTP/2.
_TLS_LINES = re.compile(
    r"^\s*#\s+(listen 443 ssl http2;|ssl_certificate\s+\S+;|ssl_certificate_key\s+\S+;)$", re.MULTILINE
)


def tls_listen(shipped: str, listen_port: int, tls: TLS) -> str:
    """The shipped file's commented TLS + HTTP/2 lines, on ``listen_port`` with ``tls``'s files."""
    lines = _TLS_LINES.findall(shipped)
    if len(lines) != 3:
        raise AssertionError(
            f"deploy/nginx.conf must show the 3 TLS + HTTP/2 lines in a comment, found {lines}"
        )
    listen, certificate, key = lines
    return (
        listen.replace("listen 443", f"listen 127.0.0.1:{listen_port}")
        + f"\n    {certificate.split()[0]} {tls.certificate};"
        + f"\n    {key.split()[0]} {tls.key};"
    )


def render_site(
    shipped: str,
    listen_port: int,
    backends: Sequence[str],
    tls: TLS | None = None,
    log_dir: Path | None = None,
) -> str:
    """The shipped site config listening on ``listen_port`` (with ``tls``: the file's own TLS and
    HTTP/2 lines) and proxying to ``backends`` (host:port); with ``log_dir``, its access logs are
    written there instead of /var/log/nginx."""
    listen = tls_listen(shipped, listen_port, tls) if tls else f"listen 127.0.0.1:{listen_port};"
    site, listens = _LISTEN.subn(lambda match: match[1] + listen, shipped)
    if log_dir is not None:
        site = _ACCESS_LOG.sub(rf"\g<1>{log_dir}/", site)
    if listens != 1:
        raise AssertionError(f"deploy/nginx.conf must have exactly one 'listen 80;' line, found {listens}")
    upstream = _UPSTREAM.search(site)
    if upstream is None:
        raise AssertionError("deploy/nginx.conf has no 'upstream ssegate { ... }' block")
    servers = list(_UPSTREAM_SERVER.finditer(upstream["body"]))
    if not servers:
        raise AssertionError("the upstream block of deploy/nginx.conf lists no 'server 127.0.0.1:PORT;'")
    indent = servers[0][1]
    ours = "".join(f"{indent}server {backend};\n" for backend in backends)
    body = _UPSTREAM_SERVER.sub("", upstream["body"])
    body = body[: servers[0].start()] + ours + body[servers[0].start() :]
    return site[: upstream.start("body")] + body + site[upstream.end("body") :]


@contextlib.asynccontextmanager
async def nginx_in_front_of(
    backend_urls: Sequence[str],
    config: Path = SHIPPED_CONFIG,
    tls: TLS | None = None,
    log_dir: Path | None = None,
) -> AsyncIterator[str]:
    """Run nginx with the shipped config (or another of deploy/) in front of ``backend_urls``;
    yields nginx's base URL (``https://`` with ``tls``). ``log_dir``: where the site's access logs
    go (default: a temp dir)."""
    if not nginx_available():
        pytest.fail(f"{NGINX} is not installed: run `make test`, which installs nginx-light", pytrace=False)
    backends = [url.removeprefix("http://").rstrip("/") for url in backend_urls]
    with tempfile.TemporaryDirectory(prefix="ssegate-nginx-") as directory:
        # Workers of a root master run as 'nobody' and must reach the temp paths.
        os.chmod(directory, 0o755)
        for attempt in range(_START_ATTEMPTS):
            port = free_port()
            process = _start(Path(directory), port, backends, config, tls, log_dir or Path(directory))
            try:
                if await _wait_listening(process, port):
                    yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
                    return
                if attempt == _START_ATTEMPTS - 1:
                    log = (Path(directory) / "error.log").read_text(errors="replace")
                    raise RuntimeError(f"nginx did not start:\n{log}")
            finally:
                _stop(process)


def _start(
    directory: Path,
    port: int,
    backends: Sequence[str],
    config: Path,
    tls: TLS | None,
    log_dir: Path,
) -> subprocess.Popen[bytes]:
    site = render_site(config.read_text(), port, backends, tls, log_dir=log_dir)
    (directory / "ssegate.conf").write_text(site)
    (directory / "nginx.conf").write_text(_MAIN.format(dir=directory))
    error_log = directory / "error.log"
    error_log.write_text("")
    command = [NGINX, "-e", str(error_log), "-p", str(directory), "-c", str(directory / "nginx.conf")]
    command += ["-g", f"daemon off; pid {directory}/nginx.pid; error_log {error_log} info;"]
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _wait_listening(process: subprocess.Popen[bytes], port: int) -> bool:
    """True once nginx accepts connections on ``port``; False if it exited (e.g. port taken)."""
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return True
        await asyncio.sleep(0.02)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the nginx we started, by its PID (SIGTERM: fast shutdown; SIGKILL if it lingers)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def self_signed_certificate(directory: Path) -> TLS:
    """A fresh self-signed certificate for 127.0.0.1 (and its key), made with ``openssl``."""
    tls = TLS(directory / "cert.pem", directory / "key.pem")
    process = await asyncio.create_subprocess_exec(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(tls.key), "-out", str(tls.certificate), "-days", "1",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), _START_TIMEOUT)
    if process.returncode != 0:
        raise RuntimeError(f"openssl could not make a certificate: {stderr.decode(errors='replace')}")
    tls.key.chmod(0o644)  # nginx's master reads it as root; its workers need not
    return tls
