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


def first_byte_error(first_byte_timeout: float, attempts: int) -> UpstreamError:
    """No response head within the per-attempt first-byte timeout, on every attempt allowed."""
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    return UpstreamError(
        "upstream_timeout",
        f"the upstream sent no response headers within {first_byte_timeout:g} s ({tries})",
        retryable=True,
    )
