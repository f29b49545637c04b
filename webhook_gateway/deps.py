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

    def dispatcher_state(self) -> str:
        if self.dispatcher is None:
            return "disabled"
        return "running" if self.tasks and not self.tasks[0].done() else "stopped"


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
