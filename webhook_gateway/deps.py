"""What routes get injected: the gateway's settings, database engine and dispatcher."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from smartplex_sync.settings import Settings
from webhook_gateway.dispatch import Dispatcher
from webhook_gateway.limits import SourceLimiter
from webhook_gateway.senders import Senders
from webhook_gateway.supabase_auth import SupabaseAdmins


@dataclass
class Gateway:
    settings: Settings
    engine: Engine
    limiter: SourceLimiter
    senders: Senders
    dispatcher: Dispatcher | None = None
    supabase_admins: SupabaseAdmins | None = None  # Supabase Auth sign-in for the admin endpoints
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def dispatcher_notify(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.notify()

    def loops(self) -> dict[str, str]:
        """Each background loop (the dispatcher, the schedule mirror): running, or stopped and why."""
        if self.dispatcher is None:
            return {"dispatcher": "disabled", "schedule-mirror": "disabled"}
        return {task.get_name(): _task_state(task) for task in self.tasks}


def _task_state(task: asyncio.Task[None]) -> str:
    if not task.done():
        return "running"
    if task.cancelled():
        return "stopped"
    error = task.exception()
    return f"stopped: {type(error).__name__}: {error}" if error else "stopped"


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
