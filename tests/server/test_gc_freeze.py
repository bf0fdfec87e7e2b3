"""``gc.freeze()`` is the server process's business (``ssegate serve``), not the app factory's."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ssegate.config import Settings
from ssegate.server.app import create_app
from ssegate.server.main import freeze_after_startup


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
async def test_an_app_started_in_someone_else_s_process_leaves_its_collector_alone() -> None:
    app = create_app(Settings())
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() == 0


@pytest.mark.usefixtures("unfrozen")
async def test_the_served_app_moves_what_start_up_loaded_out_of_full_collections() -> None:
    app = freeze_after_startup(create_app(Settings()))
    async with app.router.lifespan_context(app):
        # the providers and everything they imported were built by the app's own start-up
        assert app.state.ssegate.providers
        assert gc.get_freeze_count() > 1000
