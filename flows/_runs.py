"""What every sync flow shares: the servers a run is about, one part per server, the run's tags and its
artifact.

A run covers the Plex servers its parameters name (`request.servers`; every server when None). Each
server's part is on its own:
- it opens a SmartPlex `sync_events` row (`running`) and closes it (`completed` or `failed`, with counts,
  duration and error), with the run's trigger (webhook, scheduled, manual);
- an error in it (its Plex is down, its Tautulli refuses the key) ends that part and no other: the run
  goes on with the next server, and fails at the end, naming the servers that failed;
- a part with nothing to do (no Tautulli serves that server) is skipped, and says why.
The run tags itself `server:<name>` for every server, so the Prefect UI shows runs per server, and
publishes one `RunReport`: one table artifact, keyed by the flow's name, whose rows name their server.
Tokens and API keys never reach a log line, a parameter or an artifact: servers and integrations print
without them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.exceptions import MissingContextError
from sqlalchemy import Engine

from smartplex_sync.errors import SyncFailedError
from smartplex_sync.requests import SyncParameters, Trigger
from smartplex_sync.settings import Settings
from smartplex_sync.store import get_engine, utcnow
from smartplex_sync.store.accounts import Integration, PlexServer, plex_servers
from smartplex_sync.store.events import Counts, finish_event, start_event

T = TypeVar("T")


class Opaque(Generic[T]):
    """A task argument Prefect hands over as it is. Prefect walks every list, set, dict and dataclass
    argument of a task, element by element, looking for futures to wait on: for a page of 500 rows that
    is about 0.2 s a call, longer than storing the page. It does not look inside this."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The flow run's logger, or a plain one outside a run (a flow body called with `.fn()`)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("smartplex_sync.flows")


def _current_run_id() -> str | None:
    from prefect.runtime import flow_run

    return flow_run.id


def tag_run(tags: list[str]) -> None:
    """Add `tags` to the current flow run (a run created by a schedule or by hand has only its
    deployment's); nothing outside a run."""
    run_id = _current_run_id()
    if not run_id or not tags:
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        current = client.read_flow_run(uuid.UUID(run_id)).tags
        wanted = sorted({*current, *tags})
        if wanted != sorted(current):
            client.update_flow_run(uuid.UUID(run_id), tags=wanted)


@dataclass
class Part:
    """One server's part of a run."""

    server: PlexServer
    integration: Integration | None = None
    counts: Counts = field(default_factory=Counts)
    rows: list[dict[str, Any]] = field(default_factory=list)  # for the artifact; the server is added
    details: dict[str, Any] = field(default_factory=dict)  # into sync_events.sync_metadata
    error: str | None = None
    skipped: str | None = None

    @property
    def outcome(self) -> str:
        return "failed" if self.error else f"skipped: {self.skipped}" if self.skipped else "completed"


@dataclass(frozen=True)
class RunReport:
    """What a run publishes, once: one table artifact keyed by the flow's name. Rows may differ in their
    columns (a Plex part's sections and its removal checks): every row gets every column, blank where it
    has none, so the table reads as one."""

    key: str
    rows: list[dict[str, Any]]
    description: str

    def table(self) -> list[dict[str, Any]]:
        if not self.rows:
            return [{"server": "none", "outcome": "no server"}]
        columns = list(dict.fromkeys(column for row in self.rows for column in row))
        return [{column: row.get(column, "") for column in columns} for row in self.rows]

    def publish(self) -> None:
        create_table_artifact(key=self.key, table=self.table(), description=self.description)
        run_logger().info("%s", self.description)


class SyncRun:
    """One run of a sync flow (see the module docstring)."""

    def __init__(self, flow: str, service: str, trigger: Trigger, settings: Settings) -> None:
        self.flow = flow
        self.service = service
        self.trigger = trigger
        self.settings = settings
        self.engine: Engine = get_engine(settings.sqlalchemy_url)
        self.parts: list[Part] = []
        self.unknown: list[str] = []
        self._began = time.monotonic()

    def servers(self, request: SyncParameters[Any]) -> list[PlexServer]:
        """The servers `request` names that exist (every server when it names none), tagging the run."""
        wanted = None if request.servers is None else list(request.servers)
        with self.engine.connect() as conn:
            found = plex_servers(conn, wanted)
        self.unknown = sorted(str(s) for s in set(wanted or ()) - {s.id for s in found})
        if self.unknown:
            run_logger().warning(
                "no servers row for %s (deleted?): nothing synced for it", ", ".join(self.unknown)
            )
        tag_run([f"server:{server.name}" for server in found])
        return found

    @contextmanager
    def part(
        self, server: PlexServer, integration: Integration | None = None, **details: Any
    ) -> Iterator[Part]:
        """A server's part: its sync_events row, and its errors kept to it (logged, recorded, not raised)."""
        part = Part(server, integration, details={"flow": self.flow, **details})
        self.parts.append(part)
        started, began = utcnow(), time.monotonic()
        metadata = {**part.details, "flow_run_id": _current_run_id()}
        with self.engine.begin() as conn:
            event = start_event(
                conn,
                sync_type=self.service,
                user_id=server.user_id,
                server_id=server.id,
                integration_id=integration.id if integration else None,
                trigger=self.trigger,
                started_at=started,
                metadata=metadata,
            )
        try:
            yield part
        except Exception as exc:  # one server's failure is its part's, never the other servers'
            part.error = str(exc) or type(exc).__name__
            run_logger().error("%s on %s failed: %s", self.flow, server.name, part.error)
        with self.engine.begin() as conn:
            finish_event(
                conn,
                event,
                counts=part.counts,
                completed_at=utcnow(),
                duration_ms=round((time.monotonic() - began) * 1000),
                error=part.error,
                metadata={**metadata, **part.details},
            )

    def skip(self, server: PlexServer, reason: str) -> None:
        self.parts.append(Part(server, skipped=reason))
        run_logger().info("%s: %s skipped: %s", self.flow, server.name, reason)

    def report(self, summary: str = "") -> RunReport:
        """The run's report: a row per part (a row per row of it, server and outcome first), and a
        description naming each server's outcome, then `summary`."""
        rows = [
            {"server": part.server.name, "outcome": part.outcome, **row}
            for part in self.parts
            for row in (part.rows or [{}])
        ]
        outcome = "; ".join(f"{part.server.name}: {part.outcome}" for part in self.parts) or "no server"
        description = f"{self.flow} ({self.trigger}): {outcome}." + (f" {summary}" if summary else "")
        return RunReport(self.flow, rows, description)

    def finish(self, summary: str = "") -> dict[str, Any]:
        """Publish the run's one report; raise SyncFailedError naming the servers whose part failed."""
        self.report(summary).publish()
        failed = [part for part in self.parts if part.error]
        if failed:
            raise SyncFailedError(
                {f"{part.server.name} ({part.server.id})": part.error or "" for part in failed}
            )
        return {
            "servers": {
                str(part.server.id): {"name": part.server.name, "outcome": part.outcome, **part.details}
                for part in self.parts
            },
            "unknown_servers": self.unknown,
            "seconds": round(time.monotonic() - self._began, 2),
        }
