"""Whose delivery is it, and which of their Plex servers does it sync? Pure: the facts come in.

The sender (`Sender`, decided by `webhook_gateway.senders` from the token a delivery carries):
- the SmartPlex user whose `users.webhook_secret` it carries;
- the user the environment settings made (SMARTPLEX_OWNER_EMAIL) for SMARTPLEX_WEBHOOK_TOKEN or a source's
  own token, and for a client on this machine where no token is set;
- nobody in particular when no such user exists: then the delivery must name a server only one user has,
  or come while only one user has servers.

The servers, among the sender's (`attribute`):
- a delivery that names its Plex server (Plex's `Server.uuid`, Tautulli's `server_machine_id`) syncs that
  server only. A server the sender has no row for is refused, with one allowance: a server row that does
  not know its machine id yet (SMARTPLEX_PLEX_URL before its first sync) is the one meant, if it is the
  sender's only such row;
- a Plex delivery that names none syncs the sender's server if they have exactly one;
- Tautulli, Sonarr, Radarr and Overseerr deliveries sync the sender's servers an integration of that
  service serves (SmartPlex's `integrations`), else all the sender's servers (a Sonarr download still
  asks Plex for the new episode).
One user's secret never syncs another user's server. Whatever cannot be attributed is recorded with the
reason (answered 422) and syncs nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from smartplex_sync.models import Source
from smartplex_sync.store.accounts import ServerFacts


@dataclass(frozen=True)
class Sender:
    user_id: uuid.UUID | None  # None: no user is known, see the module docstring
    how: str  # "webhook secret", "gateway token", "local client": for the reasons given


@dataclass(frozen=True)
class Attribution:
    user_id: uuid.UUID | None
    server_ids: tuple[uuid.UUID, ...] = ()
    problem: str | None = None

    @property
    def server_id(self) -> uuid.UUID | None:
        """`webhook_log.server_id`: the server, when the delivery is about exactly one."""
        return self.server_ids[0] if len(self.server_ids) == 1 else None


def _whose(sender: Sender) -> str:
    if sender.how == "local client":
        return "the settings' user (SMARTPLEX_OWNER_EMAIL), whom a client on this machine stands for"
    return f"the user whose {sender.how} it carries"


def _owner(servers: list[ServerFacts], sender: Sender) -> uuid.UUID | None:
    owners = {server.user_id for server in servers}
    return sender.user_id or (owners.pop() if len(owners) == 1 else None)


def attribute(source: Source, sender: Sender, servers: list[ServerFacts], hint: str | None) -> Attribution:
    """The user and servers of a delivery from `source`; `servers` are the sender's (everyone's when the
    sender is nobody in particular), `hint` the Plex machine it names."""
    mine = [s for s in servers if sender.user_id is None or s.user_id == sender.user_id]
    whose = "" if sender.user_id is None else " of " + _whose(sender)
    if hint is not None:
        chosen = [s for s in mine if s.machine_id == hint]
        if not chosen:
            unknown = [s for s in mine if s.machine_id is None]
            if len(unknown) == 1 and (sender.user_id is not None or len(mine) == 1):
                chosen = unknown
        if not chosen:
            return Attribution(
                sender.user_id,
                problem=f"no Plex server with machine identifier {hint}{whose} is in SmartPlex's servers",
            )
    elif source is Source.PLEX:
        chosen = mine
        if len(chosen) != 1:
            return Attribution(
                _owner(mine, sender),
                problem=f"the delivery names no Server.uuid, and {len(mine)} Plex servers{whose} could be meant",
            )
    elif sender.user_id is None and len({s.user_id for s in mine}) > 1:
        chosen = mine  # integrations say which of a user's servers, never which user sent it
    else:
        chosen = [s for s in mine if source.value in s.services] or mine
        if not chosen:
            return Attribution(sender.user_id, problem=f"no Plex server{whose} is in SmartPlex's servers")
    owner = _owner(chosen, sender)
    if owner is None:
        return Attribution(
            None,
            problem=f"{len({s.user_id for s in chosen})} SmartPlex users' servers could be meant: send the "
            "webhook with your user's webhook secret (docs/webhooks.md)",
        )
    return Attribution(owner, tuple(s.id for s in chosen))
