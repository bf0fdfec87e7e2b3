from __future__ import annotations

import os

import pytest

from tests.deploy.nginx import NGINX, nginx_available
from tests.support.browser import chromium_available


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A missing browser or nginx must fail CI loudly (make test installs them), but may skip on a laptop.
    _skip_without("browser", chromium_available(), "/usr/bin/chromium", items)
    _skip_without("nginx", nginx_available(), NGINX, items)


def _skip_without(marker: str, available: bool, binary: str, items: list[pytest.Item]) -> None:
    if available or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason=f"{binary} is not installed (make test installs it)")
    for item in items:
        if marker in item.keywords:
            item.add_marker(skip)
