"""One SDK method's streamed call: its first attempt sent directly where the ``direct_attempt``
shortcut allows it (see :mod:`ssegate._fast.direct`), the SDK's own call otherwise."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ssegate import _fast
from ssegate._fast.direct import DirectAttempt, Opened, Retry, direct_attempt


class StreamingCall:
    """One SDK method's streamed call, as the adapters open it: the first attempt sent directly
    where :func:`direct_attempt` allows it, and the SDK's own call otherwise and after a retryable
    failure of that attempt (with one retry less: one was made)."""

    def __init__(
        self,
        client: Any,
        method: Callable[[Any], Callable[..., Any]],
        path: str,
        sdk: Any,
        *,
        spans: bool,
        spares: int,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.direct: DirectAttempt | None = None
        if _fast.enabled(_fast.DIRECT_ATTEMPT):
            self.direct = direct_attempt(client, path, sdk, spans=spans, spares=spares, options=options)
        # Resolved once, now: the SDK builds its resource objects lazily, on first access, and
        # the app moves what exists at start-up out of the garbage collector's full passes.
        self._create = method(client)
        retries = client.max_retries
        self._create_after_retry = (
            method(client.with_options(max_retries=retries - 1)) if retries > 0 else self._create
        )

    async def open(self, body: dict[str, Any], **sdk_arguments: Any) -> tuple[Any, Any]:
        """``(context, response)`` once the answer's head is in. ``body`` is what the SDK would send
        for ``sdk_arguments`` (its fields in its order, omitted ones left out). Raises the SDK's
        exceptions."""
        create = self._create
        if self.direct is not None:
            sent = await self.direct.send(body)
            if isinstance(sent, Opened):
                return sent, sent
            if isinstance(sent, Retry):
                create = self._create_after_retry
        context = create(**sdk_arguments)
        return context, await context.__aenter__()

    async def aclose(self) -> None:
        if self.direct is not None:
            await self.direct.aclose()
