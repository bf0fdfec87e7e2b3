"""ssegate inside your FastAPI or Starlette app, under a prefix of your choice.

One line::

    from ssegate.mount import mount

    app = FastAPI()
    sse = mount(app, "/sse", Settings(), principal=who_is)

mounts ssegate at ``/sse`` and makes the host app's lifespan start and stop it (event log, gateway,
providers): ssegate starts before the host's own start-up and stops after its shutdown. Every URL
ssegate returns then starts with ``/sse`` (and the host's ``root_path``, if any).

Or by hand, when the host app is built with its own lifespan::

    sse = create_app(Settings())
    app = FastAPI(lifespan=lifespan(sse, then=my_lifespan))
    app.mount("/sse", sse)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from starlette.applications import Starlette

from ssegate.config import Settings
from ssegate.finish import OnFinish
from ssegate.gateway import Gateway
from ssegate.producers import Producer
from ssegate.server.app import App, create_app
from ssegate.server.prefix import PrincipalHook
from ssegate.server.state import AppState

Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]

__all__ = ["Lifespan", "PrincipalHook", "gateway_of", "lifespan", "mount", "run_with"]


def lifespan(*apps: App, then: Lifespan | None = None) -> Lifespan:
    """A lifespan for the host app (``FastAPI(lifespan=...)``) that runs each ssegate app's start-up
    and shutdown around ``then`` (the host's own lifespan, if it has one)."""

    @contextlib.asynccontextmanager
    async def combined(host: Any) -> AsyncIterator[Any]:
        async with contextlib.AsyncExitStack() as stack:
            for app in apps:
                await stack.enter_async_context(app.router.lifespan_context(app))
            if then is None:
                yield None
            else:
                async with then(host) as state:
                    yield state

    return combined


def run_with(host: Starlette, *apps: App) -> None:
    """Make ``host``'s lifespan (whatever it is, including on_startup handlers) run ``apps`` too."""
    host.router.lifespan_context = lifespan(*apps, then=host.router.lifespan_context)


def mount(
    host: Starlette,
    path: str,
    settings: Settings | None = None,
    *,
    principal: PrincipalHook | None = None,
    producers: Sequence[Producer] = (),
    on_finish: OnFinish | Sequence[OnFinish] = (),
    name: str = "ssegate",
) -> App:
    """Mount a new ssegate app at ``path`` in ``host`` and run it with ``host``'s lifespan.

    ``principal`` maps a host request to who makes it (see :mod:`ssegate.server.prefix`): the
    host's own auth then decides who may start, watch and cancel generations. ``producers``: your
    own (:mod:`ssegate.producers`), run by ``POST /v1/generations`` with ``provider`` their name.
    ``on_finish``: called once with each finished generation (:mod:`ssegate.finish`).
    """
    if not path.startswith("/") or path.endswith("/"):
        raise ValueError(f"mount path {path!r} must start with '/' and not end with one (e.g. '/sse')")
    app = create_app(settings, principal=principal, producers=producers, on_finish=on_finish)
    host.mount(path, app, name=name)
    run_with(host, app)
    return app


def gateway_of(app: App) -> Gateway:
    """The running gateway of a started ssegate app (to start your own producers from your routes)."""
    state: AppState | None = getattr(app.state, "ssegate", None)
    if state is None:
        raise RuntimeError("ssegate has not started: run it with the host's lifespan (ssegate.mount.mount)")
    return state.gateway
