"""ssegate under a path prefix, inside a host app: its public URLs, its page, the host's auth.

Mounted at ``/sse`` in a FastAPI or Starlette app (or served behind a proxy with a ``root_path``),
every request's ASGI scope carries the prefix in ``root_path``; every URL ssegate hands out
(``Location``, ``url``, ``events_url``, ``cancel_url``, the chat page's files and API calls) is
built from it, so a client that follows them stays under the prefix.
"""

from __future__ import annotations

import functools
import html
import inspect
from collections.abc import Awaitable, Callable
from importlib import resources

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ssegate.auth import Principal
from ssegate.errors import RequestError
from ssegate.server.auth import HOOK_DECLINED, remember_identity
from ssegate.server.http import error_response

# What a host app's hook answers for a request: a principal, a principal's name (which may start
# and watch its own generations), or None (no one: ssegate's own credentials are asked for).
PrincipalHook = Callable[[Request], Awaitable[Principal | str | None] | Principal | str | None]
# The grants of a principal a hook names by a bare string.
HOOK_GRANTS = frozenset({"generate", "subscribe"})

_PAGE = resources.files("ssegate") / "static" / "index.html"


def root_path(scope: Scope) -> str:
    """Where ssegate is mounted, as seen by the client: ``""`` at the root, else ``/prefix``."""
    root: str = scope.get("root_path", "")
    return root.rstrip("/")


@functools.lru_cache(maxsize=32)
def chat_page(root: str) -> str:
    """The chat page with its files, links and API under ``root`` (one copy per prefix)."""
    root = root.rstrip("/")
    page = _PAGE.read_text(encoding="utf-8")
    if not root:
        return page
    quoted = html.escape(root, quote=True)
    page = page.replace('"/static/', f'"{quoted}/static/').replace('href="/"', f'href="{quoted}/"')
    # app.js reads its API base from here (an absolute path: the page may be at /sse or /sse/).
    return page.replace("<head>", f'<head>\n    <meta name="ssegate-base" content="{quoted}" />', 1)


class PrincipalMiddleware:
    """Asks the host app's hook who the request is before any route runs.

    A principal (or a name) it answers is the request's identity everywhere in ssegate: who owns a
    generation, who may watch or cancel it, the per-principal limits. ``None``: the request must
    bring ssegate's own credentials (an API key, a stream token), else 401. An ``HTTPException`` or
    :class:`ssegate.errors.RequestError` it raises is the answer.
    """

    def __init__(self, app: ASGIApp, hook: PrincipalHook) -> None:
        self.app = app
        self.hook = hook

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] != "OPTIONS":
            try:
                found = self.hook(Request(scope, receive))
                if inspect.isawaitable(found):
                    found = await found
            except RequestError as exc:
                await error_response(exc)(scope, receive, send)
                return
            except HTTPException as exc:
                code = "unauthorized" if exc.status_code == 401 else "forbidden"
                error = RequestError(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))
                await error_response(error)(scope, receive, send)
                return
            if found is None:
                scope[HOOK_DECLINED] = True
            else:
                principal = found if isinstance(found, Principal) else Principal(str(found), HOOK_GRANTS)
                remember_identity(scope, principal)
        await self.app(scope, receive, send)
