"""The FastAPI application: `uvicorn webhook_gateway.app:create_app --factory`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from smartplex_sync.schedule_mirror import run_mirror_loop
from smartplex_sync.settings import Settings, get_settings
from smartplex_sync.store import get_engine
from smartplex_sync.store.accounts import configure
from webhook_gateway.deps import Gateway
from webhook_gateway.dispatch import Dispatcher
from webhook_gateway.limits import SourceLimiter
from webhook_gateway.routes import StoreUnavailable, router, store_unavailable
from webhook_gateway.senders import Senders
from webhook_gateway.supabase_auth import SupabaseAdmins

log = logging.getLogger(__name__)


async def _configure_from_settings(settings: Settings, engine: Engine) -> None:
    """The rows the environment settings describe, made or updated now (as `smartplex-sync migrate` does);
    a database unreachable now is no reason not to start: `migrate` will make them."""
    try:
        await asyncio.to_thread(configure, engine, settings)
    except Exception as exc:
        log.warning("could not write the rows of the environment settings now: %s", exc)


def create_app(settings: Settings | None = None, *, background: bool = True) -> FastAPI:
    """The gateway. `background=False` records deliveries without dispatching them (tests, read replicas)."""
    settings = settings or get_settings()
    engine = get_engine(settings.sqlalchemy_url, settings.database_wait_seconds)
    gateway = Gateway(
        settings,
        engine,
        SourceLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
        Senders(settings, engine),
        supabase_admins=SupabaseAdmins.from_settings(settings, engine),
    )
    if background:
        gateway.dispatcher = Dispatcher(engine, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await _configure_from_settings(settings, engine)
        if gateway.dispatcher is not None:
            # Picks up rows left undispatched by a previous run straight away.
            gateway.tasks.append(asyncio.create_task(gateway.dispatcher.run_forever(), name="dispatcher"))
            gateway.tasks.append(asyncio.create_task(run_mirror_loop(engine), name="schedule-mirror"))
        try:
            yield
        finally:
            for task in gateway.tasks:
                task.cancel()
            for task in gateway.tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(
        title="SmartPlex Sync webhook gateway",
        summary="Plex, Tautulli, Sonarr, Radarr and Overseerr webhooks in; Prefect flow runs out.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.include_router(router)
    # A database that is locked or down gets 503 with Retry-After from every route, never a 500.
    app.add_exception_handler(StoreUnavailable, store_unavailable)
    app.add_exception_handler(DBAPIError, store_unavailable)
    return app
