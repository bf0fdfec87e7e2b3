"""Topic retention set from the environment (SSEGATE_TOPIC_MAX_EVENTS / _MAX_AGE) is what a
subscriber asking for all history gets."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from ssegate.config import Settings
from ssegate.log.base import Retention
from ssegate.server.app import create_app
from tests.support.servers import serve_asgi
from tests.topics.helpers import datas, publish, subscribe


async def test_topic_history_keeps_only_what_the_environment_says() -> None:
    settings = Settings.from_env({"SSEGATE_TOPIC_MAX_EVENTS": "3", "SSEGATE_TOPIC_MAX_AGE": "600"})
    assert settings.topic_retention == Retention(3, 600.0)
    assert settings.generation_retention == Settings().generation_retention
    app = create_app(dataclasses.replace(settings, access_log=False))
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        for n in range(1, 6):
            await publish(client, "kept", n)
        async with subscribe(client, "/v1/topics/kept/events", history="all") as stream:
            assert datas(await stream.events(3)) == [3, 4, 5]


@pytest.mark.parametrize(
    "env",
    [
        {"SSEGATE_TOPIC_MAX_EVENTS": "lots"},
        {"SSEGATE_GENERATION_MAX_AGE": "0"},
        {"SSEGATE_TOPIC_MAX_EVENTS": "0"},
    ],
)
def test_bad_retention_settings_are_refused_with_the_variable_named(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=next(iter(env)).rsplit("_", 2)[0]):
        Settings.from_env(env)
