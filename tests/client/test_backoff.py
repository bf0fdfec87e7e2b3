from __future__ import annotations

import random

import pytest

from ssegate.client import backoff_delay, parse_retry_after


class AlwaysHighest(random.Random):
    """An RNG whose uniform draw is always the top of the range: shows each attempt's ceiling."""

    def random(self) -> float:
        return 1.0


def test_backoff_delay_doubles_from_the_server_retry_up_to_the_cap() -> None:
    rng = AlwaysHighest()
    ceilings = [backoff_delay(n, base=0.5, cap=5.0, rng=rng) for n in range(8)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]


def test_backoff_delay_is_full_jitter_within_the_ceiling() -> None:
    rng = random.Random(1234)
    delays = [backoff_delay(3, base=1.0, cap=30.0, rng=rng) for _ in range(200)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    # Spread over the whole range, not clustered at the ceiling: clients do not return in lockstep.
    assert min(delays) < 1.0
    assert max(delays) > 7.0


def test_backoff_delay_is_reproducible_with_a_seeded_rng() -> None:
    first = [backoff_delay(n, base=1.0, cap=30.0, rng=random.Random(7)) for n in range(10)]
    again = [backoff_delay(n, base=1.0, cap=30.0, rng=random.Random(7)) for n in range(10)]
    assert first == again


def test_backoff_delay_never_exceeds_the_cap_after_many_failures() -> None:
    rng = AlwaysHighest()
    assert backoff_delay(10_000, base=3.0, cap=30.0, rng=rng) == 30.0


def test_backoff_delay_lets_a_server_retry_above_the_cap_win() -> None:
    assert backoff_delay(0, base=60.0, cap=30.0, rng=AlwaysHighest()) == 60.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("Thu, 01 Jan 1970 00:01:40 GMT", 40.0),
        ("Thu, 01 Jan 1970 00:00:10 GMT", 0.0),
        ("soon", None),
        ("-3", None),
        (None, None),
    ],
)
def test_parse_retry_after_reads_seconds_and_http_dates(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=60.0) == seconds
