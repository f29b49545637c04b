"""SmartPlex's own database, built from SmartPlex's own SQL as an operator builds it in Supabase's editor.

The files are reference material outside this repository (`../shared/smartplex-db/`, see its README): the
Supabase stubs (`stubs.sql`, `vector_stub.sql`), then `upstream/schema.sql`, `upstream/rls.sql` and
`upstream/migrations/NNN_*.sql` in order. Each file is run in one transaction; a file that fails (SmartPlex's
`002_add_deletion_tables.sql` does: its trigger already exists) is run again statement by statement, as an
operator pasting it piece by piece would, each failing statement skipped.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.support.postgres import pg_tool

REPO_ROOT = Path(__file__).resolve().parents[2]


def smartplex_db_dir() -> Path:
    """`../shared/smartplex-db` of this checkout (or of any folder above it), else SMARTPLEX_DB_DIR."""
    if configured := os.environ.get("SMARTPLEX_DB_DIR"):
        return Path(configured)
    for folder in (REPO_ROOT, *REPO_ROOT.parents):
        candidate = folder / "shared" / "smartplex-db"
        if (candidate / "upstream" / "schema.sql").exists():
            return candidate
    candidate = Path("/work/shared/smartplex-db")
    if candidate.exists():
        return candidate
    raise FileNotFoundError(
        "SmartPlex's SQL files were not found in ../shared/smartplex-db: set SMARTPLEX_DB_DIR to that folder"
    )


def smartplex_files(directory: Path | None = None) -> list[Path]:
    """SmartPlex's files in the order they are pasted."""
    root = directory or smartplex_db_dir()
    upstream = root / "upstream"
    migrations = sorted((upstream / "migrations").glob("[0-9][0-9][0-9]_*.sql"))
    return [upstream / "schema.sql", upstream / "rls.sql", *migrations]


@dataclass
class Applied:
    """What applying SmartPlex's files did: the files that had to be run statement by statement."""

    statement_by_statement: list[str] = field(default_factory=list)


def _psql(url: str, path: Path, *, whole: bool) -> subprocess.CompletedProcess[str]:
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    options = ["-1", "-v", "ON_ERROR_STOP=1"] if whole else ["-v", "ON_ERROR_STOP=0"]
    return subprocess.run(
        [pg_tool("psql"), "-X", "-q", *options, "-f", str(path), libpq],
        capture_output=True,
        text=True,
        timeout=120,
    )


def apply_smartplex_schema(superuser_url: str) -> Applied:
    """Build SmartPlex's database in the (empty) database of `superuser_url`."""
    root = smartplex_db_dir()
    for stub in (root / "stubs.sql", root / "vector_stub.sql"):
        result = _psql(superuser_url, stub, whole=True)
        if result.returncode != 0:
            raise RuntimeError(f"{stub.name} failed: {result.stderr}")
    applied = Applied()
    for path in smartplex_files(root):
        if _psql(superuser_url, path, whole=True).returncode != 0:
            _psql(superuser_url, path, whole=False)
            applied.statement_by_statement.append(path.name)
    return applied
