"""`smartplex-sync`: the operator's command line."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated

import typer

from smartplex_sync.migrate import migrate as apply_migrations
from smartplex_sync.models import SCHEDULED_SERVICES, Source
from smartplex_sync.settings import get_settings
from smartplex_sync.store import get_engine

app = typer.Typer(help="SmartPlex Sync: webhooks in, Prefect flow runs out.", no_args_is_help=True)


@app.callback()
def _point_prefect_at_the_stack(ctx: typer.Context) -> None:
    """Commands that talk to Prefect use PREFECT_API_URL (environment or .env), else the server `make run`
    starts, never a throwaway temporary one."""
    if ctx.invoked_subcommand in ("run", "migrate"):
        return
    from prefect.context import refresh_global_settings_context

    settings = get_settings()
    demo_env = settings.data_dir / "demo.env"
    if settings.plex_url is None and demo_env.exists():  # `make run` is in demo mode: check its services
        for line in demo_env.read_text().splitlines():
            key, _, value = line.partition("=")
            os.environ.setdefault(key, value)
        get_settings.cache_clear()
        typer.echo(f"(demo mode: services from {demo_env})", err=True)
    os.environ["PREFECT_API_URL"] = get_settings().prefect_api
    refresh_global_settings_context()


@app.command()
def migrate() -> None:
    """Apply the numbered SQL files in migrations/ to the configured database (a no-op when up to date)."""
    settings = get_settings()
    applied = apply_migrations(get_engine(settings.sqlalchemy_url))
    typer.echo(f"applied {', '.join(applied)}" if applied else "database is up to date")


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
def schedules_apply(
    restore: Annotated[
        bool,
        typer.Option(
            "--restore",
            help="Right after `prefect deploy`, which resets schedules to prefect.yaml's: push the table's.",
        ),
    ] = False,
) -> None:
    """Carry sync_schedule edits (enabled, interval_hours) over to Prefect; where both sides changed, the
    table wins. Changes made only in Prefect are copied into the table."""
    from prefect.client.orchestration import get_client

    from smartplex_sync.schedule_mirror import mirror_once

    async def apply() -> bool:
        async with get_client() as client:
            report = await mirror_once(
                get_engine(get_settings().sqlalchemy_url), client, prefer_table=True, restore=restore
            )
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
) -> None:
    """Start a sync run now, without touching its schedule; prints the flow run and where to watch it."""
    from prefect.client.orchestration import get_client
    from prefect.utilities.urls import url_for

    from deployments.operations import start_sync, sync_parameters

    async def start() -> str:
        async with get_client() as client:
            return str((await start_sync(client, service, full)).id)

    run_id = asyncio.run(start())
    typer.echo(
        f"started {SCHEDULED_SERVICES[service].value} {sync_parameters(service, full)}: flow run {run_id}"
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
