"""The ``ssegate`` command: serve | ask | watch | publish.

Errors end the command with one line on stderr and a non-zero status, never a traceback:
1 for a failure, 2 for bad usage (argparse), 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import textwrap
import urllib.parse
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TextIO

from ssegate import cli_config
from ssegate.cli_config import DEFAULT_URL, ClientConfig
from ssegate.errors import CommandError, SSEGateError

EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130  # the shell's convention for "killed by SIGINT"
# Event types whose JSON ``delta`` is a piece of running text: printed inline, not one per line.
INLINE_EVENTS = frozenset({"text", "thinking"})
# Terminal only on a generation's stream; on a topic a publisher may use these types for anything.
GENERATION_TERMINAL_EVENTS = frozenset({"done", "error"})
# ``/v1/generations/<id>/events`` under any prefix a proxy may add, but not within a topic's name
# (``/v1/topics/v1/generations/x/events``): the first ``/v1/`` of the path must start it.
_GENERATION_EVENTS_PATH = re.compile(r"(?:(?!/v1/).)*/v1/generations/[^/]+/events/?")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except BrokenPipeError:
        # The reader went away (`ssegate watch ... | head`): not an error worth a message. Point stdout
        # at /dev/null so the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(file=sys.stdout, flush=True)  # leave the shell prompt on a line of its own
        return EXIT_INTERRUPTED
    except (SSEGateError, OSError, ValueError) as exc:
        print(f"ssegate: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILURE


# Shown by `ssegate --help` and by every client command's --help.
CONFIG_HELP = f"""\
server and API key: the client commands (ask, publish, watch, config) take them from, in order,
  --url, the environment ({cli_config.URL_VARIABLE}, {cli_config.KEY_VARIABLE}), the config file
  ${cli_config.CONFIG_VARIABLE} or $XDG_CONFIG_HOME/ssegate/config.toml (~/.config/ssegate/config.toml),
  with lines url = "https://..." and api_key = "...", then {DEFAULT_URL} with no key.
  No key is ever needed on the command line: --api-key exists, but a key there is visible to
  other users in `ps` and stays in your shell history. `ssegate config` shows what is in force.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssegate",
        description="Server-Sent Events gateway and client.",
        epilog=CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the ssegate server")
    # Unset options are left to the server's settings (environment, then built-in defaults).
    serve.add_argument("--host", help="interface to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: 8000)")
    serve.add_argument(
        "--redis",
        dest="redis_url",
        metavar="URL",
        help="Redis URL for a shared event log: redis://host:port/db (one Redis or any node of a "
        "Redis Cluster), or redis+sentinel://host:port[,host:port]/service[/db]",
    )
    serve.add_argument("--workers", type=int, help="worker processes (default: 1)")
    serve.add_argument("--provider", help="LLM provider to use (default: chosen from the environment)")
    serve.add_argument(
        "--allow-public-without-auth",
        action="store_true",
        help="serve a non-loopback address with no API keys (anyone who reaches it may use it)",
    )
    serve.add_argument(
        "--allowed-hosts",
        metavar="NAMES",
        help="comma-separated Host names to answer to ('*' for any; default: loopback names "
        "without API keys, any with them)",
    )
    serve.add_argument(
        "--max-header-bytes",
        type=int,
        metavar="N",
        help="largest request head, in bytes (default: 32768; 431)",
    )
    serve.add_argument(
        "--max-headers", type=int, metavar="N", help="most request headers (default: 100; 431)"
    )
    serve.add_argument(
        "--header-timeout", type=float, metavar="S", help="seconds for a request's headers (default: 10; 408)"
    )
    serve.add_argument(
        "--body-timeout", type=float, metavar="S", help="seconds for a request's body (default: 30; 408)"
    )
    serve.set_defaults(handler=_serve)

    watch = _client_command(commands, "watch", "print the events of an event stream as they arrive")
    watch.add_argument(
        "url",
        metavar="URL",
        help="the stream: a full URL, or a path such as /v1/topics/news/events on the configured server "
        "(the API key is sent only to the configured server)",
    )
    watch.add_argument(
        "-H", "--header", action="append", default=[], metavar="'NAME: VALUE'", help="extra request header"
    )
    watch.add_argument("--json", action="store_true", help="print one JSON object per event")
    watch.add_argument("--last-event-id", metavar="ID", help="resume after this event id")
    watch.add_argument(
        "--idle-timeout", type=float, metavar="SECONDS", help="reconnect after this much silence"
    )
    watch.add_argument(
        "--max-retries",
        type=int,
        default=5,
        metavar="N",
        help="failed reconnections in a row before giving up",
    )
    _add_server_options(watch, url=False)
    watch.set_defaults(handler=_watch)

    ask = _client_command(
        commands,
        "ask",
        "stream an answer from a running ssegate server",
        "The answer's text goes to stdout; thinking, tool calls and notes go to stderr, labelled.",
    )
    ask.add_argument("prompt")
    _add_server_options(ask)
    ask.add_argument("--provider")
    ask.add_argument("--model")
    ask.add_argument("--system", help="system prompt")
    ask.add_argument("--max-tokens", type=int)
    ask.add_argument(
        "--json", action="store_true", help="print one JSON object per event on stdout, and nothing else"
    )
    ask.set_defaults(handler=_ask)

    publish = _client_command(commands, "publish", "publish an event to a topic; prints its id")
    publish.add_argument("topic", metavar="TOPIC")
    publish.add_argument("data", metavar="DATA", help="event data: JSON if it parses as JSON, else a string")
    publish.add_argument("--event", metavar="TYPE", help="event type")
    publish.add_argument(
        "--id",
        dest="event_id",
        metavar="ID",
        help="idempotency key: the same id published twice to a topic appends once",
    )
    _add_server_options(publish)
    publish.set_defaults(handler=_publish)

    config = _client_command(commands, "config", "show the server URL and API key in force, and from where")
    _add_server_options(config)
    config.set_defaults(handler=_config)
    return parser


def _client_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str = "",
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(f"{summary[0].upper()}{summary[1:]}. {description}".strip(), 96),
        epilog=CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_server_options(parser: argparse.ArgumentParser, *, url: bool = True) -> None:
    if url:
        parser.add_argument(
            "--url",
            help=f"ssegate server (default: ${cli_config.URL_VARIABLE}, the config file, or {DEFAULT_URL})",
        )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"not recommended: visible in `ps` and shell history; set ${cli_config.KEY_VARIABLE} "
        "or the config file instead",
    )


def client_config(args: argparse.Namespace, *, url_flag: bool = True) -> ClientConfig:
    """The server and key for this command (flags, environment, config file); warnings go to stderr.

    ``url_flag``: the command has ``--url`` (``watch``'s URL argument is the stream, not the server).
    """
    config = cli_config.resolve(url=args.url if url_flag else None, api_key=args.api_key)
    warnings = list(config.warnings)
    if args.api_key:
        warnings.append(
            f"a key on the command line is visible in `ps` and your shell history; "
            f"set {cli_config.KEY_VARIABLE} or the config file instead"
        )
    for warning in warnings:
        print(f"ssegate: warning: {warning}", file=sys.stderr, flush=True)
    return config


def _config(args: argparse.Namespace) -> int:
    config = client_config(args)
    path = cli_config.config_path(os.environ)
    print(f"config file: {path}{'' if path.exists() else ' (absent)'}")
    print(f"url: {config.url} (from {config.url_from})")
    if config.api_key is None:
        print("api key: none")
    else:
        # Enough to tell two keys apart, not enough to use one.
        print(f"api key: ...{config.api_key[-4:]} (from {config.api_key_from})")
    return 0


def _serve(args: argparse.Namespace) -> int:
    # Imported here so that the client commands never load the server and its dependencies.
    from ssegate.server.main import serve

    serve(
        host=args.host,
        port=args.port,
        redis_url=args.redis_url,
        workers=args.workers,
        provider=args.provider,
        allow_public_without_auth=args.allow_public_without_auth,
        allowed_hosts=args.allowed_hosts,
        max_header_bytes=args.max_header_bytes,
        max_headers=args.max_headers,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
    )
    return 0


def _run(coroutine: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coroutine)


def parse_header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise CommandError(f"a header is 'Name: value', not {text!r}")
    return name.strip(), value.strip()


def _watch(args: argparse.Namespace) -> int:
    headers = dict(parse_header(h) for h in args.header)
    config = client_config(args, url_flag=False)
    url = watch_url(args.url, config.url)
    if config.api_key and same_origin(url, config.url) and "authorization" not in map(str.lower, headers):
        headers["Authorization"] = f"Bearer {config.api_key}"
    args.url = url
    return _run(_watch_stream(args, headers))


def watch_url(given: str, server: str) -> str:
    """``given`` as an absolute URL: a path (``/v1/...``) is on the configured server."""
    if urllib.parse.urlsplit(given).scheme:
        return given
    if not given.startswith("/"):
        raise CommandError(f"give a full URL or a path starting with /, not {given!r}")
    return server.rstrip("/") + given


def same_origin(url: str, server: str) -> bool:
    """Whether ``url`` is on ``server`` (scheme, host and port): the only place a key may go."""

    def origin(text: str) -> tuple[str, str, int | None]:
        parts = urllib.parse.urlsplit(text)
        default = {"http": 80, "https": 443}.get(parts.scheme)
        return parts.scheme, (parts.hostname or "").lower(), parts.port or default

    return origin(url) == origin(server)


def is_generation_stream(url: str) -> bool:
    """Is ``url`` a generation's event stream, which ends with its ``done`` or ``error`` event?

    Any other stream ends only when the server answers 204 (or the user stops watching).
    """
    return _GENERATION_EVENTS_PATH.fullmatch(urllib.parse.urlsplit(url).path) is not None


async def _watch_stream(args: argparse.Namespace, headers: dict[str, str]) -> int:
    from ssegate.client import EventSource

    printer = EventPrinter(sys.stdout, as_json=args.json)
    source = EventSource(
        args.url,
        headers=headers,
        last_event_id=args.last_event_id,
        idle_timeout=args.idle_timeout,
        max_retries=args.max_retries,
        stop_on=GENERATION_TERMINAL_EVENTS if is_generation_stream(args.url) else (),
    )
    async with source:
        async for event in source:
            printer.print(event.event, event.id or "", event.data)
    printer.finish()
    return 0


def _ask(args: argparse.Namespace) -> int:
    return _run(_ask_stream(args))


def use_color(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR")


async def _ask_stream(args: argparse.Namespace) -> int:
    from ssegate.cli_answer import AnswerPrinter
    from ssegate.client import GatewayClient

    config = client_config(args)
    printer: EventPrinter | AnswerPrinter = (
        EventPrinter(sys.stdout, as_json=True)
        if args.json
        else AnswerPrinter(sys.stdout, sys.stderr, color=use_color(sys.stderr))
    )
    async with GatewayClient(config.url, api_key=config.api_key) as gateway:
        started = await gateway.start_generation(
            prompt=args.prompt,
            system=args.system,
            provider=args.provider,
            model=args.model,
            max_tokens=args.max_tokens,
        )
        generation_id = str(started["id"])
        failed: str | None = None
        try:
            async with contextlib.aclosing(gateway.follow(generation_id)) as events:
                async for event in events:
                    if isinstance(printer, AnswerPrinter):
                        printer.print(event.type, event.data)
                    else:
                        printer.print_data(event.type, event.id, event.data)
                    if event.failed:
                        failed = _error_message(event.data)
        except asyncio.CancelledError:
            # Ctrl-C: whoever else watches, this user no longer wants the tokens; stop paying for them.
            await _cancel_quietly(gateway, generation_id)
            raise
    printer.finish()
    if failed is not None:
        raise CommandError(failed)
    return 0


async def _cancel_quietly(gateway: Any, generation_id: str) -> None:
    try:
        async with asyncio.timeout(5):
            await gateway.cancel(generation_id)
    except (SSEGateError, TimeoutError):
        print(f"ssegate: could not cancel generation {generation_id}", file=sys.stderr, flush=True)


def _error_message(data: Any) -> str:
    if isinstance(data, dict):
        return f"{data.get('code', 'error')}: {data.get('message', '')}"
    return str(data)


def _publish(args: argparse.Namespace) -> int:
    return _run(_publish_event(args))


async def _publish_event(args: argparse.Namespace) -> int:
    from ssegate.client import GatewayClient

    try:
        data: Any = json.loads(args.data)
    except ValueError:
        data = args.data
    config = client_config(args)
    async with GatewayClient(config.url, api_key=config.api_key) as gateway:
        event_id = await gateway.publish(args.topic, data, event=args.event, id=args.event_id)
    print(event_id, flush=True)
    return 0


class EventPrinter:
    """Writes events as they come (``watch``, ``ask --json``): running text inline, everything else
    one per line; with ``as_json``, one JSON object per line and nothing else."""

    def __init__(self, out: TextIO, *, as_json: bool) -> None:
        self._out = out
        self._as_json = as_json
        self._mid_line = False  # the last write did not end a line

    def print(self, event_type: str, event_id: str, data: str) -> None:
        """Print an event whose data is the raw string from the wire."""
        try:
            decoded: Any = json.loads(data)
        except ValueError:
            decoded = data
        self._emit(event_type, event_id, data, decoded)

    def print_data(self, event_type: str, event_id: str, decoded: Any) -> None:
        """Print an event whose data is already decoded."""
        raw = decoded if isinstance(decoded, str) else json.dumps(decoded, ensure_ascii=False)
        self._emit(event_type, event_id, raw, decoded)

    def _emit(self, event_type: str, event_id: str, raw: str, decoded: Any) -> None:
        if self._as_json:
            record = {"event": event_type, "id": event_id, "data": decoded}
            self._write(json.dumps(record, ensure_ascii=False) + "\n", inline=False)
            return
        delta = decoded.get("delta") if isinstance(decoded, dict) else None
        if event_type in INLINE_EVENTS and isinstance(delta, str):
            self._write(delta, inline=True)
            return
        self._write(f"{event_type}: {raw}\n", inline=False)

    def _write(self, text: str, *, inline: bool) -> None:
        # Running text continues its own line; anything else starts on a fresh one.
        if not inline:
            self.finish()
        self._out.write(text)
        self._out.flush()
        if inline and text:
            self._mid_line = True

    def finish(self) -> None:
        if self._mid_line:
            self._out.write("\n")
            self._out.flush()
            self._mid_line = False


if __name__ == "__main__":
    sys.exit(main())
