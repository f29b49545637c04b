"""What the operator commands do: `schedules` (both sides, aligned), `sync <service>` and `doctor`.

Formatting and parameter choices are pure functions; the gathering functions do the I/O.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from smartplex_sync.errors import ConfigurationError, ServiceError
from smartplex_sync.migrate import pending
from smartplex_sync.models import SCHEDULED_SERVICES, WORK_POOL, Deployment, Source
from smartplex_sync.requests import (
    DEFAULT_HISTORY_DAYS,
    PARAMETERS,
    PlexLibrarySync,
    SyncParameters,
    TautulliSync,
)
from smartplex_sync.schedule_mirror import PREFECT_YAML, load_defaults, read_history, read_prefect_side
from smartplex_sync.settings import Settings
from smartplex_sync.store import utcnow, webhooks
from smartplex_sync.store.schedules import read_schedules

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

# Tautulli's `--full`: all history (tautulli-sync's days=0) instead of the 7-day window.
TAUTULLI_ALL_HISTORY = 0
# An unprocessed delivery older than this means the gateway's dispatcher is not getting through.
STUCK_AFTER = timedelta(minutes=5)
# A worker whose last heartbeat is older than this is not polling.
WORKER_STALE_AFTER = timedelta(seconds=90)


# ------------------------------------------------------------------------------------------------ formats


def format_interval(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def format_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def format_flag(value: bool | None, yes: str, no: str) -> str:
    return "-" if value is None else (yes if value else no)


def align(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


# -------------------------------------------------------------------------------------------- schedules


@dataclass(frozen=True)
class ScheduleView:
    """One deployment, as the table and as Prefect have it. `table_*` None: no sync_schedule row."""

    deployment: str
    service: str | None
    table_hours: int | None
    table_enabled: bool | None
    deployed: bool
    prefect_seconds: float | None
    prefect_active: bool | None
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_status: str | None


SCHEDULE_HEADER = (
    "service",
    "deployment",
    "table",
    "prefect",
    "next run",
    "last run",
    "status",
)


def format_schedules(views: Sequence[ScheduleView]) -> list[str]:
    rows = [SCHEDULE_HEADER]
    for view in views:
        table = (
            f"{view.table_hours}h {format_flag(view.table_enabled, 'on', 'off')}"
            if view.table_hours is not None
            else "-"
        )
        if not view.deployed:
            prefect = "not deployed"
        elif view.prefect_active is None:
            prefect = "no schedule"
        else:
            prefect = f"{format_interval(view.prefect_seconds)} {format_flag(view.prefect_active, 'active', 'paused')}"
        rows.append(
            (
                view.service or "-",
                view.deployment,
                table,
                prefect,
                format_time(view.next_run_at),
                format_time(view.last_run_at),
                view.last_status or "-",
            )
        )
    return align(rows)


async def gather_schedule_views(engine: Engine, client: PrefectClient) -> list[ScheduleView]:
    """Every deployment of prefect.yaml with its sync_schedule row (if any) and its state in Prefect."""
    from prefect.exceptions import ObjectNotFound

    rows = {r.deployment: r for r in await asyncio.to_thread(read_schedules, engine)}
    defaults = load_defaults(PREFECT_YAML.read_text())
    views = []
    for deployment in Deployment:
        row = rows.get(deployment.value)
        default = defaults.get(deployment.value)
        table = (row.interval_hours, row.enabled) if row else (None, None)
        try:
            side = await read_prefect_side(client, deployment, default.slug if default else None)
        except ObjectNotFound:
            views.append(
                ScheduleView(deployment.value, row.service if row else None, *table, False, *(None,) * 5)
            )
            continue
        history = await read_history(client, side.deployment_id)
        views.append(
            ScheduleView(
                deployment=deployment.value,
                service=row.service if row else None,
                table_hours=table[0],
                table_enabled=table[1],
                deployed=True,
                prefect_seconds=side.interval_seconds,
                prefect_active=side.active if side.schedule else None,
                next_run_at=history.next_run_at,
                last_run_at=history.last_run_at,
                last_status=history.last_status,
            )
        )
    return views


# ------------------------------------------------------------------------------------------------- sync


def sync_parameters(service: Source, full: bool) -> dict[str, Any]:
    """Parameters of a run started by hand. The Sonarr, Radarr and Overseerr syncs are always full."""
    request: SyncParameters
    if service is Source.PLEX:
        request = PlexLibrarySync(mode="full" if full else "incremental")
    elif service is Source.TAUTULLI:
        request = TautulliSync(days=TAUTULLI_ALL_HISTORY if full else DEFAULT_HISTORY_DAYS)
    else:
        request = PARAMETERS[SCHEDULED_SERVICES[service]]()
    return {"request": request.to_json()}


async def start_sync(client: PrefectClient, service: Source, full: bool) -> FlowRun:
    """A flow run of the service's deployment, due now. The deployment's schedule is not touched."""
    deployment = await client.read_deployment_by_name(SCHEDULED_SERVICES[service].full_name)
    return await client.create_flow_run_from_deployment(
        deployment.id, parameters=sync_parameters(service, full), tags=["manual"]
    )


# ----------------------------------------------------------------------------------------------- doctor


@dataclass(frozen=True)
class Check:
    """One line of `doctor`. `ok` None: informational, neither passed nor failed (e.g. skipped)."""

    ok: bool | None
    label: str
    fix: str | None = None

    def line(self) -> str:
        mark = {True: "✓", False: "✗", None: "·"}[self.ok]
        return f"{mark} {self.label}" + (f" — fix: {self.fix}" if self.fix and self.ok is False else "")


def check_database(engine: Engine) -> Check:
    try:
        missing = pending(engine)
    except Exception as exc:
        return Check(
            False,
            f"database unreachable ({engine.url.render_as_string()}): {exc}".splitlines()[0],
            "check SMARTPLEX_DATABASE_URL and that the database is running",
        )
    if missing:
        versions = ", ".join(m.version for m in missing)
        return Check(
            False, f"database reachable, migrations pending: {versions}", "run `smartplex-sync migrate`"
        )
    return Check(True, f"database reachable and migrated ({engine.dialect.name})")


def check_prefect_health(api_url: str | None) -> Check:
    if not api_url:
        return Check(False, "PREFECT_API_URL is not set", "export PREFECT_API_URL=http://127.0.0.1:4200/api")
    try:
        healthy = httpx.get(f"{api_url.rstrip('/')}/health", timeout=5).is_success
    except httpx.HTTPError as exc:
        healthy, detail = False, str(exc)
    else:
        detail = "unhealthy answer"
    if healthy:
        return Check(True, f"Prefect reachable at {api_url}")
    return Check(
        False,
        f"Prefect not reachable at {api_url}: {detail}",
        "start it (`smartplex-sync run`) or fix PREFECT_API_URL",
    )


def deployment_check(
    deployment: Deployment, deployed: bool, seconds: float | None, active: bool | None
) -> Check:
    if not deployed:
        return Check(
            False,
            f"deployment {deployment.full_name} missing",
            "run `prefect --no-prompt deploy --all` from the repository root",
        )
    if active is None:
        return Check(
            False,
            f"deployment {deployment.value} has no schedule",
            "run `smartplex-sync schedules apply`, or deploy again to restore prefect.yaml's",
        )
    state = "active" if active else "paused"
    return Check(True, f"deployment {deployment.value}: schedule every {format_interval(seconds)}, {state}")


async def check_deployments(client: PrefectClient) -> list[Check]:
    from prefect.exceptions import ObjectNotFound

    defaults = load_defaults(PREFECT_YAML.read_text())
    checks = []
    for deployment in Deployment:
        default = defaults.get(deployment.value)
        try:
            side = await read_prefect_side(client, deployment, default.slug if default else None)
        except ObjectNotFound:
            checks.append(deployment_check(deployment, False, None, None))
            continue
        active = side.active if side.schedule else None
        checks.append(deployment_check(deployment, True, side.interval_seconds, active))
    return checks


def worker_check(pool: str, heartbeats: Sequence[datetime | None] | None, now: datetime) -> Check:
    """`heartbeats` None: the pool does not exist."""
    if heartbeats is None:
        return Check(False, f"work pool {pool} missing", f"prefect work-pool create {pool} --type process")
    recent = [h for h in heartbeats if h is not None and now - h <= WORKER_STALE_AFTER]
    if recent:
        return Check(
            True, f"{len(recent)} worker(s) polling pool {pool}, last heartbeat {format_time(max(recent))}"
        )
    return Check(
        False, f"no worker is polling pool {pool}", f"start one: `prefect worker start --pool {pool}`"
    )


async def check_worker(client: PrefectClient, pool: str) -> Check:
    from prefect.exceptions import ObjectNotFound

    try:
        await client.read_work_pool(pool)
    except ObjectNotFound:
        return worker_check(pool, None, utcnow())
    workers = await client.read_workers_for_work_pool(pool)
    return worker_check(pool, [w.last_heartbeat_time for w in workers], utcnow())


# Supabase's transaction pooler (Supavisor, or PgBouncer in transaction mode) listens on 6543.
TRANSACTION_POOLER_PORT = 6543


def prefect_database_check(url: str | None, host: str | None = None, port: int | None = None) -> Check | None:
    """Prefect's own database must never be reached through a transaction pooler: Prefect's server uses
    asyncpg prepared statements and LISTEN/NOTIFY. `url` is PREFECT_API_DATABASE_CONNECTION_URL, `host`
    and `port` Prefect's separate settings; None when this machine has no PostgreSQL URL for Prefect."""
    query: dict[str, Any] = {}
    if url:
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql":
            return None
        host, port, query = parsed.host or host, parsed.port or port, dict(parsed.query)
    elif not host:
        return None
    where = f"{host}:{port or 5432}"
    if port == TRANSACTION_POOLER_PORT or str(query.get("pgbouncer", "")).lower() == "true":
        return Check(
            False,
            f"Prefect's database is reached through a transaction pooler ({where}); Prefect's server needs "
            "prepared statements and LISTEN/NOTIFY, which it does not keep",
            "point PREFECT_API_DATABASE_CONNECTION_URL at the direct connection or the session pooler (5432)",
        )
    return Check(True, f"Prefect's database at {where}, not a transaction pooler")


def check_prefect_database() -> Check | None:
    """`prefect_database_check` on the Prefect settings this machine sees (environment, profile, .env)."""
    from prefect.settings import get_current_settings

    database = get_current_settings().server.database
    url = database.connection_url.get_secret_value() if database.connection_url else None
    return prefect_database_check(url, database.host, database.port)


# (service, module, class): the clients each service's sync uses; `check()` proves URL and key.
SERVICE_CLIENTS = (
    (Source.PLEX, "flows.clients.plex", "PlexClient"),
    (Source.TAUTULLI, "flows.clients.tautulli", "TautulliClient"),
    (Source.SONARR, "flows.clients.sonarr", "SonarrClient"),
    (Source.RADARR, "flows.clients.radarr", "RadarrClient"),
    (Source.OVERSEERR, "flows.clients.overseerr", "OverseerrClient"),
)


def check_service(service: Source, settings: Settings, client_factory: Callable[[Settings], Any]) -> Check:
    """Build the client from settings and call its `check()`, which proves the URL and the key."""
    try:
        with client_factory(settings) as client:
            return Check(True, f"{service.value}: {client.check()}")
    except ConfigurationError as exc:
        return Check(False, f"{service.value}: {exc}", "set the SMARTPLEX_* variable it names")
    except ServiceError as exc:
        fix = (
            "check the API key / token"
            if exc.status_code in (401, 403)
            else f"check SMARTPLEX_{service.value.upper()}_URL and that {service.value} is running"
        )
        return Check(False, str(exc), fix)


def check_services(settings: Settings) -> list[Check]:
    """One check per service; services without a URL are skipped (webhooks-only setups are fine)."""
    checks = []
    for service, module, name in SERVICE_CLIENTS:
        if getattr(settings, f"{service.value}_url") is None:
            variable = f"SMARTPLEX_{service.value.upper()}_URL"
            checks.append(Check(None, f"{service.value}: not configured ({variable} unset), skipped"))
            continue
        try:
            factory = getattr(importlib.import_module(module), name).from_settings
        except (ImportError, AttributeError) as exc:
            checks.append(
                Check(False, f"{service.value}: client unavailable ({exc})", "reinstall smartplex-sync")
            )
            continue
        checks.append(check_service(service, settings, factory))
    return checks


@dataclass(frozen=True)
class LastWebhook:
    source: str
    event_type: str
    received_at: datetime
    processed: bool
    error_message: str | None


def webhook_check(source: Source, last: LastWebhook | None, now: datetime) -> Check:
    if last is None:
        return Check(None, f"webhooks from {source.value}: none received yet")
    when = f"last {last.event_type} at {format_time(last.received_at)}"
    if last.error_message:
        return Check(
            False,
            f"webhooks from {source.value}: {when}, error: {last.error_message}",
            "see webhook_log.error_message and the flow run in the Prefect UI",
        )
    if not last.processed and now - last.received_at > STUCK_AFTER:
        return Check(
            False,
            f"webhooks from {source.value}: {when}, still waiting for its flow run",
            "check that the gateway is running and reaches Prefect",
        )
    state = "processed" if last.processed else "dispatching"
    return Check(True, f"webhooks from {source.value}: {when}, {state}")


def last_webhooks(engine: Engine) -> dict[str, LastWebhook]:
    """The newest webhook_log row of each source."""
    fields = LastWebhook.__dataclass_fields__
    return {
        source: LastWebhook(**{name: row[name] for name in fields})
        for source, row in webhooks.last_per_source(engine).items()
    }


async def run_doctor(settings: Settings, engine: Engine, api_url: str | None) -> list[Check]:
    """Every check, in order; Prefect's own checks are skipped when it cannot be reached."""
    from prefect.client.orchestration import get_client

    checks = [await asyncio.to_thread(check_database, engine)]
    prefect = check_prefect_health(api_url)
    checks.append(prefect)
    if prefect_database := check_prefect_database():
        checks.append(prefect_database)
    if prefect.ok:
        async with get_client() as client:
            checks.extend(await check_deployments(client))
            checks.append(await check_worker(client, WORK_POOL))
    checks.extend(await asyncio.to_thread(check_services, settings))
    if checks[0].ok:
        now = utcnow()
        found = await asyncio.to_thread(last_webhooks, engine)
        checks.extend(webhook_check(source, found.get(source.value), now) for source in Source)
    return checks
