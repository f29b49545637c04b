"""What the operator commands do: `schedules` (both sides, aligned), `sync <service>` and `doctor`.

Formatting and parameter choices are pure functions; the gathering functions do the I/O.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from smartplex_sync.errors import ConfigurationError, ServiceError
from smartplex_sync.migrate import pending
from smartplex_sync.models import SERVICE_OF, SERVICES, WORK_POOL, Deployment, Source
from smartplex_sync.requests import PARAMETERS
from smartplex_sync.settings import Settings
from smartplex_sync.store import utcnow, webhooks
from smartplex_sync.store.accounts import Integration, PlexServer, integration_rows, plex_servers, user_emails
from smartplex_sync.store.schedules import read_schedules

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

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
    """One sync_schedule row, as the table and as Prefect have it."""

    service: str
    owner: str  # the user's email, or "every server" (SmartPlex's global table)
    deployment: str
    table_hours: int
    table_enabled: bool
    deployed: bool
    prefect_seconds: float | None  # None: no schedule (or not an interval)
    prefect_active: bool | None  # None: no schedule under the row's slug
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_status: str | None


SCHEDULE_HEADER = ("service", "owner", "deployment", "table", "prefect", "next run", "last run", "status")


def format_schedules(views: Sequence[ScheduleView]) -> list[str]:
    rows = [SCHEDULE_HEADER]
    for view in views:
        table = f"{view.table_hours}h {format_flag(view.table_enabled, 'on', 'off')}"
        if not view.deployed:
            prefect = "not deployed"
        elif view.prefect_active is None:
            prefect = "no schedule"
        else:
            prefect = f"{format_interval(view.prefect_seconds)} {format_flag(view.prefect_active, 'active', 'paused')}"
        rows.append(
            (
                view.service,
                view.owner,
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
    """Every sync_schedule row with its schedule in Prefect (by the row's slug)."""
    from prefect.exceptions import ObjectNotFound

    rows = await asyncio.to_thread(read_schedules, engine)
    with engine.connect() as conn:
        emails = user_emails(conn, [row.user_id for row in rows if row.user_id])
    schedules: dict[Deployment, dict[str, Any] | None] = {}
    for deployment in sorted(SERVICE_OF):
        try:
            found = await client.read_deployment_by_name(deployment.full_name)
        except ObjectNotFound:
            schedules[deployment] = None
            continue
        schedules[deployment] = {s.slug: s for s in found.schedules if s.slug}
    views = []
    for row in rows:
        deployment = SERVICES[Source(row.service)].deployment
        by_slug = schedules[deployment]
        schedule = by_slug.get(row.slug) if by_slug is not None else None
        interval = getattr(schedule.schedule, "interval", None) if schedule else None
        views.append(
            ScheduleView(
                service=row.service,
                owner=emails.get(row.user_id, str(row.user_id)) if row.user_id else "every server",
                deployment=deployment.value,
                table_hours=row.interval_hours,
                table_enabled=row.enabled,
                deployed=by_slug is not None,
                prefect_seconds=interval.total_seconds() if interval else None,
                prefect_active=schedule.active if schedule else None,
                next_run_at=row.next_run_at,
                last_run_at=row.last_run_at,
                last_status=row.last_status,
            )
        )
    return views


# ------------------------------------------------------------------------------------------------- sync


def sync_parameters(service: Source, full: bool, server_ids: Sequence[uuid.UUID]) -> dict[str, Any]:
    """Parameters of a run started by hand, on these servers (`Scope.by_hand`: the Sonarr, Radarr and
    Overseerr syncs are always full)."""
    parameters = PARAMETERS[SERVICES[service].deployment]
    return {
        "request": parameters.on(server_ids, parameters.SCOPE.by_hand(full)).to_json(),
        "trigger": "manual",
    }


async def start_sync(
    client: PrefectClient, service: Source, full: bool, server_ids: Sequence[uuid.UUID]
) -> FlowRun:
    """A flow run of the service's deployment, due now. No schedule is touched."""
    deployment = await client.read_deployment_by_name(SERVICES[service].deployment.full_name)
    return await client.create_flow_run_from_deployment(
        deployment.id, parameters=sync_parameters(service, full, server_ids), tags=["manual"]
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


def deployment_check(deployment: Deployment, deployed: bool, schedules: int) -> Check:
    if not deployed:
        return Check(
            False,
            f"deployment {deployment.full_name} missing",
            "run `prefect --no-prompt deploy --all` from the repository root",
        )
    return Check(True, f"deployment {deployment.value}: {schedules} schedule(s)")


async def check_deployments(client: PrefectClient) -> list[Check]:
    from prefect.exceptions import ObjectNotFound

    checks = []
    for deployment in Deployment:
        try:
            found = await client.read_deployment_by_name(deployment.full_name)
        except ObjectNotFound:
            checks.append(deployment_check(deployment, False, 0))
            continue
        checks.append(deployment_check(deployment, True, len(found.schedules)))
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


def check_service(label: str, connect: Callable[[], Any], fix_url: str) -> Check:
    """Build a client and call its `check()`, which proves the URL and the key or token."""
    try:
        with connect() as client:
            return Check(True, f"{label}: {client.check()}")
    except ConfigurationError as exc:
        return Check(False, f"{label}: {exc}", "complete the row in SmartPlex (or the SMARTPLEX_* setting)")
    except ServiceError as exc:
        fix = "check the API key / token" if exc.status_code in (401, 403) else fix_url
        return Check(False, f"{label}: {exc}", fix)


def _integration_client(integration: Integration, settings: Settings) -> Any:
    from flows.clients import INTEGRATION_CLIENTS

    return INTEGRATION_CLIENTS[Source(integration.service)].for_integration(integration, settings)


def check_services(settings: Settings, engine: Engine) -> list[Check]:
    """One check per Plex server and per active Tautulli, Sonarr, Radarr and Overseerr integration in
    SmartPlex's tables (the environment's included)."""
    from flows.clients.plex import PlexClient

    with engine.connect() as conn:
        servers: list[PlexServer] = plex_servers(conn)
        integrations = integration_rows(conn)
    if not servers:
        return [
            Check(
                None,
                "no Plex server in SmartPlex's servers (set SMARTPLEX_PLEX_URL, or add one in SmartPlex)",
            )
        ]
    checks = [
        check_service(
            f"plex {server.name!r}",
            lambda server=server: PlexClient.for_server(server, settings),  # type: ignore[misc]
            f"check the server's URL ({server.url}) and that Plex is running",
        )
        for server in servers
    ]
    checks += [
        check_service(
            f"{integration.service} {integration.name!r}",
            lambda integration=integration: _integration_client(integration, settings),  # type: ignore[misc]
            f"check the integration's URL ({integration.url}) and that {integration.service} is running",
        )
        for integration in integrations
    ]
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


def stack_checks(state: dict[str, Any] | None, supervisor_alive: bool) -> list[Check]:
    """`make run`'s processes as its supervisor last wrote them (`<data dir>/stack.json`): one line each, with
    its restarts and last exit. A process waiting to be started again fails the check."""
    if state is None:
        return [Check(None, "make run: not started with this data dir (no stack.json)")]
    if not supervisor_alive or state.get("status") == "stopped":
        return [Check(None, f"make run: not running (last update {state.get('updated_at', '?')})")]
    checks = []
    for name, process in state.get("processes", {}).items():
        restarts = process.get("restarts", 0)
        history = f"{restarts} restart{'' if restarts == 1 else 's'}"
        if process.get("last_exit"):
            history += f", last exit: {process['last_exit']} at {process.get('last_exit_at')}"
        if process.get("running"):
            label = f"{name}: running (pid {process.get('pid')}) since {process.get('started_at')}, {history}"
            checks.append(Check(True, label))
        else:
            label = f"{name}: down, waiting to be started again ({history})"
            checks.append(Check(False, label, f"read {process.get('log')}"))
    return checks


def check_stack(data_dir: Path) -> list[Check]:
    path = data_dir / "stack.json"
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return stack_checks(None, False)
    except (OSError, ValueError) as exc:
        return [
            Check(False, f"make run: cannot read {path}: {exc}", f"delete {path}; make run writes it again")
        ]
    return stack_checks(state, _process_alive(state.get("supervisor_pid")))


def _process_alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


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
    if checks[0].ok:
        checks.extend(await asyncio.to_thread(check_services, settings, engine))
    if checks[0].ok:
        now = utcnow()
        found = await asyncio.to_thread(last_webhooks, engine)
        checks.extend(webhook_check(source, found.get(source.value), now) for source in Source)
    checks.extend(check_stack(settings.data_dir))
    return checks
