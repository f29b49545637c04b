"""`smartplex-sync`: the operator's command line."""

from __future__ import annotations

import typer

from smartplex_sync.migrate import migrate as apply_migrations
from smartplex_sync.settings import get_settings
from smartplex_sync.store import get_engine

app = typer.Typer(help="SmartPlex Sync: webhooks in, Prefect flow runs out.", no_args_is_help=True)


@app.command()
def migrate() -> None:
    """Apply the numbered SQL files in migrations/ to the configured database (a no-op when up to date)."""
    settings = get_settings()
    applied = apply_migrations(get_engine(settings.sqlalchemy_url))
    typer.echo(f"applied {', '.join(applied)}" if applied else "database is up to date")


@app.command()
def run() -> None:
    """Run the whole stack: migrations, Prefect server (unless PREFECT_API_URL is set), deployments,
    a worker and the webhook gateway. Ctrl-C stops everything it started."""
    from deployments.stack import run_stack

    raise typer.Exit(run_stack(get_settings()))
