"""The upstream errors both the adapters and the body shortcuts raise mid-answer."""

from __future__ import annotations

from ssegate.providers.base import UpstreamError


def timeout_error(idle_timeout: float) -> UpstreamError:
    return UpstreamError(
        "upstream_timeout", f"the upstream sent nothing for {idle_timeout:g} s", retryable=True
    )


def disconnected_error(detail: str) -> UpstreamError:
    return UpstreamError(
        "upstream_disconnected",
        f"the upstream closed the stream before it finished: {detail}",
        retryable=True,
    )
