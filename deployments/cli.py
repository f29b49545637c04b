"""`smartplex-sync`: the operator's command line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from smartplex_sync.migrate import migrate as apply_migrations
from smartplex_sync.models import SERVICES, Source
from smartplex_sync.settings import get_settings
from smartplex_sync.store import get_engine

if TYPE_CHECKING:
    from sqlalchemy import Engine

app = typer.Typer(help="SmartPlex Sync: webhooks in, Prefect flow runs out.", no_args_is_help=True)


@app.callback()
def _point_prefect_at_the_stack(ctx: typer.Context) -> None:
    """Commands that talk to Prefect use PREFECT_API_URL (environment or .env), else the server `make run`
    starts, never a throwaway temporary one. Both hold for the command only (`ctx.with_resource`): a caller
    in the same process (a test) finds its environment and Prefect's settings as they were."""
    if ctx.invoked_subcommand in ("run", "migrate", "webhooks"):
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    settings = get_settings()
    demo_env = settings.data_dir / "demo.env"
    if settings.plex_url is None and demo_env.exists():  # `make run` is in demo mode: check its services
        ctx.with_resource(_environment_with(demo_env))
        typer.echo(f"(demo mode: services from {demo_env})", err=True)
    ctx.with_resource(temporary_settings(updates={PREFECT_API_URL: get_settings().prefect_api}))


@contextmanager
def _environment_with(env_file: Path) -> Iterator[None]:
    """The variables of `env_file` that the environment does not set, until the block ends."""
    added = {}
    for line in env_file.read_text().splitlines():
        key, _, value = line.partition("=")
        if key and key not in os.environ:
            added[key] = os.environ[key] = value
    get_settings.cache_clear()
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)
        get_settings.cache_clear()


@app.command()
def migrate() -> None:
    """Bring the configured database to the shape SmartPlex Sync needs (migrations/*.sql; SmartPlex's tables
    are added to, never changed), then create or update the rows the SMARTPLEX_* settings describe."""
    from smartplex_sync.store.accounts import configure

    settings = get_settings()
    engine = get_engine(settings.sqlalchemy_url)
    applied = apply_migrations(engine)
    typer.echo(f"applied {', '.join(applied)}" if applied else "database is up to date")
    if configured := configure(engine, settings):
        server = f", Plex server {configured.server_id}" if configured.server_id else ""
        typer.echo(f"settings: user {settings.owner_email} ({configured.user_id}){server}")


@app.command()
def run() -> None:
    """Run the whole stack: migrations, Prefect server (unless PREFECT_API_URL is set), deployments,
    a worker and the webhook gateway, restarting any that dies. Ctrl-C stops everything it started."""
    # The supervisor stays up as long as the stack: replace this process (Typer, SQLAlchemy, settings) by
    # a fresh interpreter that imports only what watching processes needs (deployments/stack.py).
    os.execv(sys.executable, [sys.executable, "-m", "deployments.stack"])


schedules_app = typer.Typer(
    help="sync_schedule and Prefect's deployment schedules, side by side.", invoke_without_command=True
)
app.add_typer(schedules_app, name="schedules")


@schedules_app.callback()
def schedules(ctx: typer.Context) -> None:
    """Print each deployment's schedule as sync_schedule and as Prefect have it, with its next and last run."""
    if ctx.invoked_subcommand is not None:
        return
    from prefect.client.orchestration import get_client

    from deployments.operations import format_schedules, gather_schedule_views

    async def gather() -> list[str]:
        async with get_client() as client:
            return format_schedules(
                await gather_schedule_views(get_engine(get_settings().sqlalchemy_url), client)
            )

    for line in asyncio.run(gather()):
        typer.echo(line)


@schedules_app.command("apply")
def schedules_apply() -> None:
    """Carry sync_schedule edits (enabled, interval_hours) over to Prefect now; where both sides changed,
    the table wins. Changes made only in Prefect are copied into the table."""
    from prefect.client.orchestration import get_client

    from smartplex_sync.schedule_mirror import mirror_once

    async def apply() -> bool:
        async with get_client() as client:
            report = await mirror_once(get_engine(get_settings().sqlalchemy_url), client, prefer_table=True)
        for line in report.lines():
            typer.echo(line)
        return report.ok

    if not asyncio.run(apply()):
        raise typer.Exit(1)


@app.command()
def sync(
    service: Annotated[Source, typer.Argument(help="The service to sync now.")],
    full: Annotated[
        bool, typer.Option("--full", help="Plex: full instead of incremental; Tautulli: all history.")
    ] = False,
    server: Annotated[
        list[str] | None,
        typer.Option("--server", help="A Plex server (its name or id in SmartPlex's servers); default: all."),
    ] = None,
) -> None:
    """Start a sync run now, without touching any schedule; prints the flow run and where to watch it."""
    from prefect.client.orchestration import get_client
    from prefect.utilities.urls import url_for

    from deployments.operations import start_sync
    from smartplex_sync.store.accounts import plex_servers

    with get_engine(get_settings().sqlalchemy_url).connect() as conn:
        known = plex_servers(conn)
    chosen = [s for s in known if not server or s.name in server or str(s.id) in server]
    if not chosen:
        typer.echo("no such Plex server in SmartPlex's servers" if server else "no Plex server yet", err=True)
        raise typer.Exit(1)

    async def start() -> str:
        async with get_client() as client:
            return str((await start_sync(client, service, full, [s.id for s in chosen])).id)

    run_id = asyncio.run(start())
    names = ", ".join(s.name for s in chosen)
    typer.echo(
        f"started {SERVICES[service].deployment.value} ({'full' if full else 'default'}) of {names}: flow run {run_id}"
    )
    typer.echo(url_for("flow-run", run_id) or "(set PREFECT_UI_URL to get a link)")


@app.command()
def doctor() -> None:
    """Check the database, Prefect, the worker, each configured service and the last webhooks; one line each.
    Exits non-zero when a check fails."""
    from prefect.settings import get_current_settings

    from deployments.operations import run_doctor

    settings = get_settings()
    engine = get_engine(settings.sqlalchemy_url)
    checks = asyncio.run(run_doctor(settings, engine, get_current_settings().api.url))
    for check in checks:
        typer.echo(check.line())
    if any(check.ok is False for check in checks):
        raise typer.Exit(1)


webhooks_app = typer.Typer(
    help="webhook_log: list, show and replay deliveries, straight from the database (no gateway needed).",
    no_args_is_help=True,
)
app.add_typer(webhooks_app, name="webhooks")

_DURATION = re.compile(r"(\d+)\s*([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime) -> datetime:
    """`30m`, `2h`, `7d` before `now`, or an ISO date / date-time (UTC unless it says otherwise)."""
    if match := _DURATION.fullmatch(text.strip()):
        return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: use 30m, 2h, 7d or an ISO date such as 2026-12-01T08:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


SinceOption = Annotated[
    str | None, typer.Option("--since", help="Only deliveries received since: 30m, 2h, 7d, or an ISO date.")
]
FailedOption = Annotated[
    bool, typer.Option("--failed", help="Only rejected deliveries (4xx) and those carrying an error.")
]


def _since(since: str | None) -> datetime | None:
    return None if since is None else parse_since(since, datetime.now(UTC))


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def format_deliveries(rows: list[dict[str, Any]]) -> list[str]:
    """One aligned line per delivery, in the order given: what `webhooks ls` prints."""
    from deployments.operations import align

    header = ("id", "received (UTC)", "source", "event", "action", "http", "state", "error")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        if (row["http_status"] or 0) >= 400:
            state = "rejected"
        elif row["processed"]:
            state = "dispatched" if row["flow_run_ids"] else "done"
        else:
            state = "pending"
        error = (row["error_message"] or "").replace("\n", " ")
        lines.append(
            (
                str(row["id"])[:8],
                _when(row["received_at"]),
                row["source"],
                row["event_type"][:30],
                (row["action"] or "-")[:40],
                str(row["http_status"] or "-"),
                state,
                error[:80] + ("…" if len(error) > 80 else ""),
            )
        )
    return align(lines)


@webhooks_app.command("ls")
def webhooks_ls(
    source: Annotated[Source | None, typer.Option("--source", help="Only this service's deliveries.")] = None,
    failed: FailedOption = False,
    since: SinceOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first.")] = 50,
) -> None:
    """List recorded deliveries, newest first: what arrived, what it asked for, where it stands."""
    from smartplex_sync.store import webhooks

    rows = webhooks.find(
        get_engine(get_settings().sqlalchemy_url),
        source=source.value if source else None,
        failed=failed,
        since=_since(since),
        limit=limit,
    )
    for line in format_deliveries(rows) if rows else ["no deliveries match"]:
        typer.echo(line)


def _delivery_id(engine: Any, text: str) -> uuid.UUID:
    """A delivery's id from the command line: whole, or the first characters `webhooks ls` shows."""
    from smartplex_sync.store import webhooks

    found = webhooks.resolve_id(engine, text)
    if found is None:
        typer.echo(f"no webhook {text} (give its id, or at least 4 first characters naming one)", err=True)
        raise typer.Exit(1)
    return found


@webhooks_app.command("show")
def webhooks_show(
    webhook_id: Annotated[str, typer.Argument(help="The webhook_log id (or its first characters).")],
) -> None:
    """One delivery in full: its fields, the runs it asked for and its stored payload, secrets hidden."""
    from smartplex_sync.redact import redact
    from smartplex_sync.store import webhooks

    settings = get_settings()
    engine = get_engine(settings.sqlalchemy_url)
    found = _delivery_id(engine, webhook_id)
    row = webhooks.get(engine, found)
    if row is None:
        typer.echo(f"no webhook {webhook_id}", err=True)
        raise typer.Exit(1)
    row = redact({**row, "flow_run_ids": webhooks.flow_runs_of(engine, found)}, settings.secret_values())
    payload, requests = row.pop("payload"), row.pop("sync_requests")
    for name, value in row.items():
        if isinstance(value, datetime):
            value = _when(value)
        elif isinstance(value, list):
            value = ", ".join(value) or "-"
        typer.echo(f"{name + ':':<19}{value}")
    typer.echo("sync_requests:")
    for request in requests:
        typer.echo(f"  {json.dumps(request, sort_keys=True)}")
    typer.echo("payload:" + (" (none kept)" if payload is None else ""))
    if payload is not None:
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


@webhooks_app.command("replay")
def webhooks_replay(
    webhook_id: Annotated[
        str | None, typer.Argument(help="The webhook_log id (or its first characters).")
    ] = None,
    failed: FailedOption = False,
    since: SinceOption = None,
) -> None:
    """Parse stored deliveries again with today's parsers and record each as a new delivery, as
    `POST /api/webhooks/{id}/replay` does. A running gateway's dispatcher turns them into flow runs.

    `replay N` replays one; `replay --failed --since T` every failed delivery received since T, oldest
    first, except those still being dispatched (the dispatcher retries them) and those that kept no
    readable body."""
    if (webhook_id is None) == (not failed):
        raise typer.BadParameter("give a webhook id, or --failed with --since")
    if failed and since is None:
        raise typer.BadParameter("--failed needs --since, so that a replay never reaches back without bound")
    settings = get_settings()
    engine = get_engine(settings.sqlalchemy_url)
    scan_grace = timedelta(seconds=settings.plex_scan_grace_seconds)
    if webhook_id is not None:
        _replay_one(engine, _delivery_id(engine, webhook_id), scan_grace)
    else:
        _replay_failed(engine, _since(since), scan_grace)


def _replay_one(engine: Engine, found: uuid.UUID, scan_grace: timedelta) -> None:
    from smartplex_sync.errors import PayloadError
    from webhook_gateway.deliveries import replay

    try:
        replayed = replay(engine, found, scan_grace)
    except PayloadError as refused:
        typer.echo(f"webhook {found} not replayed ({refused.status_code}): {refused.message}", err=True)
        raise typer.Exit(1) from None
    new_id = replayed.recorded.row_id
    if (error := replayed.recorded.error) is not None:
        typer.echo(
            f"webhook {found} → webhook {new_id}, rejected ({error.status_code}): {error.message}", err=True
        )
        raise typer.Exit(1)
    typer.echo(f"webhook {found} → webhook {new_id}: {replayed.parsed.action_label} ({replayed.note})")


def _replay_failed(engine: Engine, since: datetime | None, scan_grace: timedelta) -> None:
    """Every failed delivery received since `since`, oldest first, with a count of each outcome."""
    from smartplex_sync.errors import PayloadError
    from smartplex_sync.store import webhooks
    from webhook_gateway.deliveries import replay

    counts = {"replayed": 0, "still rejected": 0, "skipped": 0}
    for row in webhooks.find(engine, failed=True, since=since, limit=None, oldest_first=True):
        if not row["processed"]:
            counts["skipped"] += 1
            typer.echo(f"webhook {row['id']} skipped: still being dispatched (the dispatcher retries it)")
            continue
        try:
            replayed = replay(engine, row["id"], scan_grace)
        except PayloadError as refused:
            counts["skipped" if refused.status_code == 409 else "still rejected"] += 1
            typer.echo(f"webhook {row['id']} not replayed ({refused.status_code}): {refused.message}")
            continue
        if (error := replayed.recorded.error) is not None:
            counts["still rejected"] += 1
            typer.echo(f"webhook {row['id']} still rejected ({error.status_code}): {error.message}")
            continue
        counts["replayed"] += 1
        typer.echo(
            f"webhook {row['id']} → webhook {replayed.recorded.row_id}: {replayed.parsed.action_label}"
        )
    typer.echo(", ".join(f"{count} {what}" for what, count in counts.items()))
