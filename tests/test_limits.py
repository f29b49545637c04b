"""Per-source rate limits: the token bucket on its own (with a clock we move), then over real HTTP."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from simulators.serving import serve_in_thread
from smartplex_sync.models import Source
from smartplex_sync.settings import Settings
from smartplex_sync.store.tables import webhook_log
from tests.conftest import both_backends
from webhook_gateway.app import create_app
from webhook_gateway.limits import REFUSAL_RECORD_SECONDS, SourceLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_source_gets_its_burst_then_its_rate() -> None:
    clock = Clock()
    limiter = SourceLimiter(per_second=2, burst=5, clock=clock)
    assert [limiter.admit(Source.SONARR) for _ in range(5)] == [None] * 5
    refusal = limiter.admit(Source.SONARR)
    assert refusal is not None and refusal.retry_after == 1
    assert limiter.admit(Source.RADARR) is None  # another source has its own bucket
    clock.now += 0.5  # one token back at 2 per second
    assert limiter.admit(Source.SONARR) is None
    assert limiter.admit(Source.SONARR) is not None
    clock.now += 3600  # a quiet hour refills the burst, never more
    assert [limiter.admit(Source.SONARR) for _ in range(6)].count(None) == 5


def test_retry_after_is_the_whole_seconds_until_the_next_token() -> None:
    clock = Clock()
    limiter = SourceLimiter(per_second=0.25, burst=1, clock=clock)
    assert limiter.admit(Source.PLEX) is None
    refusal = limiter.admit(Source.PLEX)
    assert refusal is not None and refusal.retry_after == 4
    clock.now += 2.5
    refusal = limiter.admit(Source.PLEX)
    assert refusal is not None and refusal.retry_after == 2  # 1.5 s rounded up


def test_a_flood_records_one_refusal_per_source_per_interval_and_counts_the_rest() -> None:
    clock = Clock()
    limiter = SourceLimiter(per_second=0.001, burst=1, clock=clock)
    limiter.admit(Source.TAUTULLI)
    refusals = [limiter.admit(Source.TAUTULLI) for _ in range(500)]
    assert [r.record for r in refusals if r].count(True) == 1
    assert refusals[0] and refusals[0].record
    clock.now += REFUSAL_RECORD_SECONDS
    later = limiter.admit(Source.TAUTULLI)
    assert later is not None and later.record
    assert "499 more refused in the 60 s before this one" in later.message


def test_a_rate_of_zero_means_no_limit() -> None:
    limiter = SourceLimiter(per_second=0, burst=1)
    assert all(limiter.admit(Source.OVERSEERR) is None for _ in range(1000))


def gateway_settings(database_url: str, **overrides: Any) -> Settings:
    return Settings(database_url=database_url, _env_file=None, **overrides)


@pytest.fixture
def limited_gateway(database_url: str) -> Iterator[str]:
    # A refill this slow adds less than one token over any test run: the count accepted is exactly the burst.
    settings = gateway_settings(database_url, rate_limit_burst=20, rate_limit_per_second=0.001)
    with serve_in_thread(create_app(settings, background=False)) as url:
        yield url


EVENTS = {"tautulli": {"event": "test"}, "overseerr": {"notification_type": "TEST_NOTIFICATION"}}


def send_all(url: str, sources: list[str]) -> list[tuple[str, httpx.Response]]:
    """One delivery per item of `sources`, from 8 concurrent senders."""

    def send(source: str) -> tuple[str, httpx.Response]:
        if source == "plex":
            files = {"payload": (None, '{"event": "media.play"}')}
            return source, client.post(f"{url}/api/webhooks/plex", files=files)
        return source, client.post(
            f"{url}/api/webhooks/{source}", json=EVENTS.get(source, {"eventType": "Test"})
        )

    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(send, sources))


def statuses(engine: Engine) -> Counter[tuple[str, int]]:
    with engine.connect() as conn:
        return Counter(
            (row.source, row.http_status)
            for row in conn.execute(select(webhook_log.c.source, webhook_log.c.http_status))
        )


@both_backends
def test_a_flood_from_one_source_does_not_starve_the_others(limited_gateway: str, engine: Engine) -> None:
    flood = ["sonarr"] * 120
    others = ["plex", "tautulli", "radarr", "overseerr"] * 20  # each exactly at its burst of 20
    answers = send_all(limited_gateway, flood + others)

    by_source = Counter((source, response.status_code) for source, response in answers)
    assert by_source[("sonarr", 202)] == 20
    assert by_source[("sonarr", 429)] == 100
    for source in ("plex", "tautulli", "radarr", "overseerr"):
        assert by_source[(source, 202)] == 20, by_source  # below the limit: nothing refused, nothing lost
    refused = [response for source, response in answers if response.status_code == 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert {r.json()["error"] for r in refused} == {"rate_limited"}

    recorded = statuses(engine)
    assert {key: n for key, n in recorded.items() if key[1] == 202} == {
        ("sonarr", 202): 20,
        **{(source, 202): 20 for source in ("plex", "tautulli", "radarr", "overseerr")},
    }
    # The flood left one row (or one per minute the test took), and the other refusals were counted.
    assert 1 <= recorded[("sonarr", 429)] <= 3
    assert sum(1 for r in refused if r.json()["id"] is not None) == recorded[("sonarr", 429)]
    assert httpx.get(f"{limited_gateway}/healthz").status_code == 200


def test_with_the_default_limits_a_real_burst_is_accepted_whole(database_url: str, engine: Engine) -> None:
    """60 Radarr downloads at once (a 40-movie import and its upgrades) and 90 more across the others."""
    burst = ["radarr"] * 60 + ["sonarr"] * 30 + ["plex"] * 30 + ["overseerr"] * 15 + ["tautulli"] * 15
    with serve_in_thread(create_app(gateway_settings(database_url), background=False)) as url:
        codes = Counter(response.status_code for _, response in send_all(url, burst))
    assert codes == {202: 150}
    assert sum(statuses(engine).values()) == 150
