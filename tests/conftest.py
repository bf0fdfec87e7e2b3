from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from ssegate import _fast
from tests.deploy.nginx import NGINX, nginx_available
from tests.support.browser import chromium_available

# Under coverage's tracer, and on a machine shared by many, drawing examples can be slow: that is a
# health check about the test's speed, not a finding about ssegate, so it may not fail a run.
settings.register_profile("ssegate", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("ssegate")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A missing browser or nginx must fail CI loudly (make test installs them), but may skip on a laptop.
    _skip_without("browser", chromium_available(), "/usr/bin/chromium", items)
    _skip_without("nginx", nginx_available(), NGINX, items)
    # What a fast path does is asserted only where it runs (SSEGATE_FAST_PATHS=0: make unit-plain).
    # @pytest.mark.fast_paths(name, ...): the shortcuts a test needs (none named: all of them).
    off = _fast.problems()
    for item in items:
        marker = item.get_closest_marker("fast_paths")
        if marker is not None:
            names = marker.args or tuple(_fast.SHORTCUTS)
            why = [f"{name}: {off[name]}" for name in names if name in off]
            if why:
                item.add_marker(pytest.mark.skip(reason=f"fast path off ({'; '.join(why)})"))


def _skip_without(marker: str, available: bool, binary: str, items: list[pytest.Item]) -> None:
    if available or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason=f"{binary} is not installed (make test installs it)")
    for item in items:
        if marker in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["fast", "plain"])
def paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The test once with ssegate's fast paths on, then off (SSEGATE_FAST_PATHS=0: stock uvicorn,
    the SDKs' own streaming calls)."""
    if request.param == "plain":
        monkeypatch.setenv(_fast.ENV, "0")
    _fast.reset()  # the switch is read once and kept: read it again for this test
    yield request.param
    monkeypatch.delenv(_fast.ENV, raising=False)
    _fast.reset()
