"""A Tautulli simulator: the `/api/v2` commands our sync uses, and the Webhook agent's deliveries.

Faithful where our code depends on it (Tautulli's plexpy/api2.py, datatables.py, datafactory.py):
- the envelope `{"response": {"result", "message", "data"}}`, also on errors: a missing or wrong
  `apikey` answers 401, a missing or unknown `cmd` 400, a failure inside a command 500 with
  "Check the logs for errors";
- `get_history` filters `after`/`before` (YYYY-MM-DD, inclusive) on the local date of `started` in the
  server's time zone, takes comma lists for the id filters, defaults to grouping=1 (rows resumed from
  the same session merged) and include_activity=1 (sessions in progress, with a NULL row id), orders by
  `date desc`, and pages with `start`/`length` (default 25) by running the whole filtered query and
  slicing it, as Tautulli does: every page costs a pass over the history.
- Webhook bodies: the user's JSON template with `{param}` substituted in every string, so every value
  is a string and unknown parameters stay as `{param}` (plexpy/notification_handler.py).
"""

from __future__ import annotations

import asyncio
import json
import random
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

WATCHED_PERCENT = 85
"""Tautulli's default "watched" threshold for movies and episodes (watched_status 1, half of it 0.5)."""

DEFAULT_PAGE_LENGTH = 25

DOCUMENTED_TEMPLATE = json.dumps(
    {
        "event": "{action}",
        "rating_key": "{rating_key}",
        "parent_rating_key": "{parent_rating_key}",
        "grandparent_rating_key": "{grandparent_rating_key}",
        "media_type": "{media_type}",
        "title": "{title}",
        "user": "{user}",
        "user_id": "{user_id}",
        "progress_percent": "{progress_percent}",
        "server_machine_id": "{server_machine_id}",
        "unixtime": "{unixtime}",
    },
    indent=2,
)
"""The JSON Data users paste into Tautulli's Webhook agent for Playback Stop and Watched."""

_PLATFORMS = [("Roku", "Living Room"), ("Chrome", "Plex Web"), ("iOS", "iPhone"), ("Android", "Shield")]


@dataclass(frozen=True)
class HistoryItem:
    """A Plex item that can be played: a movie or an episode (with its season and show)."""

    rating_key: int
    title: str
    media_type: str = "movie"
    year: int | None = 2020
    duration_seconds: int = 5400
    parent_rating_key: int | None = None
    grandparent_rating_key: int | None = None
    parent_title: str = ""
    grandparent_title: str = ""
    media_index: int | None = None
    parent_media_index: int | None = None

    @property
    def full_title(self) -> str:
        if self.media_type == "episode":
            return f"{self.grandparent_title} - {self.title}"
        return self.title


@dataclass(frozen=True)
class TautulliUser:
    user_id: int
    username: str
    friendly_name: str


@dataclass(frozen=True)
class Play:
    """One finished play, as a row of Tautulli's session_history."""

    row_id: int
    reference_id: int
    item: HistoryItem
    user: TautulliUser
    started: int  # epoch seconds
    stopped: int
    paused_counter: int
    percent_complete: int
    platform: str
    player: str
    play_duration: int = 0  # seconds played: stopped - started - paused

    @property
    def watched_status(self) -> float:
        if self.percent_complete >= WATCHED_PERCENT:
            return 1.0
        return 0.5 if self.percent_complete >= WATCHED_PERCENT / 2 else 0.0


DEFAULT_USERS = (
    TautulliUser(1001, "jamie.r", "Jamie R"),
    TautulliUser(1002, "sam", "Sam"),
    TautulliUser(1003, "alex.k", "Alex K"),
    TautulliUser(1004, "kid-account", "Kids"),
)


@dataclass
class TautulliHistory:
    """The truth: every finished play, plus sessions still in progress (no row id yet)."""

    users: tuple[TautulliUser, ...] = DEFAULT_USERS
    plays: list[Play] = field(default_factory=list)
    active: list[Play] = field(default_factory=list)
    last_row_id: int = 0

    @classmethod
    def generate(
        cls,
        items: Sequence[HistoryItem],
        *,
        plays: int,
        days: float = 30,
        now: datetime | None = None,
        seed: int = 0,
        users: tuple[TautulliUser, ...] = DEFAULT_USERS,
    ) -> TautulliHistory:
        """`plays` plays of `items` spread over the last `days` days; about one in ten resumes the
        previous session of the same user and item (so Tautulli's grouping would merge them)."""
        rng = random.Random(seed)
        end = int((now or datetime.now(UTC)).timestamp()) - 3 * 3600  # every play over by `now`
        begin = end - int(days * 86400)
        history = cls(users=users)
        for _ in range(plays):
            percent = rng.randint(90, 100) if rng.random() < 0.6 else rng.randint(1, 89)
            earlier = rng.choice(history.plays) if history.plays and rng.random() < 0.1 else None
            if earlier is not None and earlier.stopped + 3600 <= end:
                started = earlier.stopped + rng.randint(60, 3600)
                history.add_play(
                    earlier.item,
                    started=started,
                    percent_complete=percent,
                    user=earlier.user,
                    resumes=earlier,
                    rng=rng,
                )
            else:
                started = rng.randint(begin, end)
                history.add_play(rng.choice(items), started=started, percent_complete=percent, rng=rng)
        history.plays.sort(key=lambda p: (p.stopped, p.row_id))
        renumber = {p.row_id: n for n, p in enumerate(history.plays, start=1)}
        history.plays = [
            replace(p, row_id=renumber[p.row_id], reference_id=renumber[p.reference_id])
            for p in history.plays
        ]
        history.last_row_id = len(history.plays)
        return history

    def extend(self, newer: TautulliHistory) -> None:
        """Append the plays of `newer` (e.g. generated for a later period) under the next row ids."""
        offset = self.last_row_id
        self.plays += [
            replace(p, row_id=p.row_id + offset, reference_id=p.reference_id + offset) for p in newer.plays
        ]
        self.last_row_id = max((p.row_id for p in self.plays), default=0)

    def add_play(
        self,
        item: HistoryItem,
        *,
        started: datetime | int,
        percent_complete: int,
        user: TautulliUser | None = None,
        paused_counter: int = 0,
        resumes: Play | None = None,
        rng: random.Random | None = None,
    ) -> Play:
        """Record a finished play (the next row id) and return it."""
        rng = rng or random.Random(len(self.plays))
        start = int(started.timestamp()) if isinstance(started, datetime) else started
        watched = item.duration_seconds * percent_complete // 100
        platform, player = rng.choice(_PLATFORMS)
        self.last_row_id += 1
        row_id = self.last_row_id
        play = Play(
            row_id=row_id,
            reference_id=resumes.reference_id if resumes else row_id,
            item=item,
            user=user or rng.choice(self.users),
            started=start,
            stopped=start + watched + paused_counter,
            paused_counter=paused_counter,
            percent_complete=percent_complete,
            platform=platform,
            player=player,
            play_duration=watched,
        )
        self.plays.append(play)
        return play

    def start_session(self, item: HistoryItem, user: TautulliUser, started: int) -> None:
        """A play in progress: listed with a NULL row id when include_activity=1 (row_id 0 = none yet)."""
        self.active.append(Play(0, 0, item, user, started, started, 0, 0, *_PLATFORMS[0]))


@dataclass
class SimulatorState:
    """What a test can see and steer: request counts and injected faults."""

    history: TautulliHistory
    api_key: str
    timezone: ZoneInfo
    pms_identifier: str
    pms_name: str
    failure_rate: float = 0.0
    latency: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    requests: int = 0
    commands: dict[str, int] = field(default_factory=dict)
    faults: list[int | float] = field(default_factory=list)

    def inject(self, *faults: int | float) -> None:
        """Answer the next requests with these faults: an int is an HTTP status (5xx: Tautulli's error
        envelope), a float a delay in seconds before answering normally (to cause client timeouts)."""
        self.faults.extend(faults)


def create_tautulli_app(
    history: TautulliHistory,
    *,
    api_key: str,
    timezone: str = "America/New_York",
    pms_identifier: str = "simulated-pms-0001",
    pms_name: str = "SmartPlex Demo",
    failure_rate: float = 0.0,
    latency: float = 0.0,
    seed: int = 0,
) -> FastAPI:
    """The simulator as an ASGI app; its `SimulatorState` is `app.state.tautulli`."""
    state = SimulatorState(
        history=history,
        api_key=api_key,
        timezone=ZoneInfo(timezone),
        pms_identifier=pms_identifier,
        pms_name=pms_name,
        failure_rate=failure_rate,
        latency=latency,
        rng=random.Random(seed),
    )
    app = FastAPI(title="Tautulli simulator")
    app.state.tautulli = state

    @app.get("/api/v2")
    async def api_v2(request: Request) -> JSONResponse:
        state.requests += 1
        params = dict(request.query_params)
        if state.latency:
            await asyncio.sleep(state.latency)
        if state.faults:
            fault = state.faults.pop(0)
            if isinstance(fault, float):
                await asyncio.sleep(fault)
            else:
                return _envelope("error", "Check the logs for errors", status=fault)
        if state.failure_rate and state.rng.random() < state.failure_rate:
            return _envelope("error", "Check the logs for errors", status=500)
        if "apikey" not in params:
            return _envelope("error", "Parameter apikey is required", status=401)
        if params.pop("apikey") != state.api_key:
            return _envelope("error", "Invalid apikey", status=401)
        cmd = params.pop("cmd", None)
        known = ", ".join(sorted(_COMMANDS))
        if cmd is None:
            return _envelope("error", f"Parameter cmd is required. Possible commands are: {known}", 400)
        if cmd not in _COMMANDS:
            return _envelope("error", f"Unknown command: {cmd}. Possible commands are: {known}", 400)
        state.commands[cmd] = state.commands.get(cmd, 0) + 1
        try:
            data = _COMMANDS[cmd](state, params)
        except (ValueError, KeyError):
            return _envelope("error", "Check the logs for errors", status=500)
        return _envelope("success", None, data=data)

    return app


def _envelope(result: str, message: str | None, status: int = 200, data: Any = None) -> JSONResponse:
    body = {"response": {"result": result, "message": message, "data": {} if data is None else data}}
    return JSONResponse(body, status_code=status)


def _get_server_info(state: SimulatorState, _params: Mapping[str, str]) -> dict[str, Any]:
    return {
        "pms_identifier": state.pms_identifier,
        "pms_ip": "127.0.0.1",
        "pms_is_remote": 0,
        "pms_name": state.pms_name,
        "pms_platform": "Linux",
        "pms_plexpass": 1,
        "pms_port": 32400,
        "pms_ssl": 0,
        "pms_url": "http://127.0.0.1:32400",
        "pms_url_manual": 0,
        "pms_version": "1.41.3.9314-a0bfb8370",
    }


def _server_status(_state: SimulatorState, _params: Mapping[str, str]) -> dict[str, Any]:
    return {"connected": True}


def _split(value: str | None) -> set[str] | None:
    """Tautulli's split_strip: `"1, 2"` → {"1", "2"}; absent or empty → no filter."""
    if not value:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _local_date(epoch: int, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(epoch, tz).date()


_Group = tuple[Play, ...]
_FILTERS: dict[str, Callable[[Play], object]] = {
    "rating_key": lambda p: p.item.rating_key,
    "parent_rating_key": lambda p: p.item.parent_rating_key,
    "grandparent_rating_key": lambda p: p.item.grandparent_rating_key,
    "user_id": lambda p: p.user.user_id,
    "media_type": lambda p: p.item.media_type,
}
_ORDER: dict[str, Callable[[_Group], Any]] = {
    "date": lambda g: g[-1].started,  # Tautulli's `date` is MAX(started) of a group
    "started": lambda g: g[0].started,
    "stopped": lambda g: g[-1].stopped,
    "duration": lambda g: sum(p.play_duration for p in g),
    "paused_counter": lambda g: sum(p.paused_counter for p in g),
    "full_title": lambda g: g[-1].item.full_title,
    "friendly_name": lambda g: g[-1].user.friendly_name,
    "platform": lambda g: g[-1].platform,
    "player": lambda g: g[-1].player,
}


def _get_history(state: SimulatorState, params: Mapping[str, str]) -> dict[str, Any]:
    """Like Tautulli: the whole filtered query runs for every page, then the page is sliced out."""
    history = state.history
    tz = state.timezone
    groups = _grouped(history.plays, params.get("grouping", "1") == "1")
    if params.get("include_activity", "1") == "1":
        groups += [(p,) for p in history.active]
    after = date.fromisoformat(params["after"]) if params.get("after") else None
    before = date.fromisoformat(params["before"]) if params.get("before") else None
    exact = date.fromisoformat(params["start_date"]) if params.get("start_date") else None
    filters = [(_FILTERS[name], wanted) for name in _FILTERS if (wanted := _split(params.get(name)))]

    def keep(group: _Group) -> bool:
        if after or before or exact:
            day = _local_date(group[0].started, tz)
            if (after and day < after) or (before and day > before) or (exact and day != exact):
                return False
        return all(str(value(group[-1])) in wanted for value, wanted in filters)

    filtered = [group for group in groups if keep(group)]
    order = _ORDER.get(params.get("order_column", "date"), _ORDER["date"])
    filtered.sort(key=order, reverse=params.get("order_dir", "desc") != "asc")
    start = int(params.get("start", 0))
    length = int(params.get("length", DEFAULT_PAGE_LENGTH))
    return {
        "recordsFiltered": len(filtered),
        "recordsTotal": len(groups),
        "draw": int(params.get("draw", 1)),
        "data": [_row(group, active=group[-1].row_id == 0) for group in filtered[start : start + length]],
        "filter_duration": _duration_text(sum(_ORDER["duration"](g) for g in filtered)),
        "total_duration": _duration_text(sum(_ORDER["duration"](g) for g in groups)),
    }


def _grouped(plays: Iterable[Play], grouping: bool) -> list[_Group]:
    """With grouping, plays resumed from one session (same reference_id) become one row."""
    if not grouping:
        return [(play,) for play in plays]
    groups: dict[int, list[Play]] = {}
    for play in plays:
        groups.setdefault(play.reference_id, []).append(play)
    return [tuple(group) for group in groups.values()]


def _row(group: _Group, active: bool) -> dict[str, Any]:
    """One `data[]` row of get_history, with Tautulli's field names and JSON types."""
    first, last = group[0], group[-1]
    item, user = last.item, last.user
    duration = sum(p.play_duration for p in group)
    row_id = None if active else last.row_id
    return {
        "reference_id": None if active else first.reference_id,
        "row_id": row_id,
        "id": row_id,
        "date": last.started,
        "started": first.started,
        "stopped": None if active else last.stopped,
        "duration": duration,
        "play_duration": duration,
        "paused_counter": sum(p.paused_counter for p in group),
        "user_id": user.user_id,
        "user": user.username,
        "friendly_name": user.friendly_name,
        "user_thumb": "",
        "platform": last.platform,
        "product": "Plex Web" if last.platform == "Chrome" else f"Plex for {last.platform}",
        "player": last.player,
        "ip_address": "192.168.1.20",
        "live": 0,
        "machine_id": f"device-{user.user_id}",
        "location": "lan",
        "secure": 1,
        "relayed": 0,
        "media_type": item.media_type,
        "rating_key": item.rating_key,
        "parent_rating_key": item.parent_rating_key if item.parent_rating_key is not None else "",
        "grandparent_rating_key": item.grandparent_rating_key
        if item.grandparent_rating_key is not None
        else "",
        "full_title": item.full_title,
        "title": item.title,
        "parent_title": item.parent_title,
        "grandparent_title": item.grandparent_title,
        "original_title": "",
        "year": item.year,
        "media_index": item.media_index if item.media_index is not None else "",
        "parent_media_index": item.parent_media_index if item.parent_media_index is not None else "",
        "thumb": f"/library/metadata/{item.rating_key}/thumb/1700000000",
        "originally_available_at": "",
        "guid": f"plex://{item.media_type}/{item.rating_key:024x}",
        "transcode_decision": "direct play",
        "percent_complete": last.percent_complete,
        "watched_status": last.watched_status,
        "group_count": len(group),
        "group_ids": ",".join(str(p.row_id) for p in group),
        "state": "playing" if active else None,
        "session_key": 1 if active else None,
    }


def _duration_text(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    parts = [f"{days} days" if days else "", f"{hours} hrs" if hours else "", f"{rest // 60} mins"]
    return " ".join(p for p in parts if p)


_COMMANDS: dict[str, Callable[[SimulatorState, Mapping[str, str]], dict[str, Any]]] = {
    "get_history": _get_history,
    "get_server_info": _get_server_info,
    "server_status": _server_status,
}


class _KeepUnknown(string.Formatter):
    """Tautulli's CustomFormatter: a parameter it does not know stays as the literal `{name}`."""

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, str):
            return kwargs.get(key, "{" + key + "}")
        return super().get_value(key, args, kwargs)


def notification_parameters(
    play: Play, *, action: str, server_machine_id: str, now: datetime | None = None
) -> dict[str, str]:
    """The notification parameters Tautulli offers for a play (the ones our template uses, and a few more)."""
    item = play.item
    now = now or datetime.now(UTC)
    return {
        "action": action,
        "server_machine_id": server_machine_id,
        "rating_key": str(item.rating_key),
        "parent_rating_key": "" if item.parent_rating_key is None else str(item.parent_rating_key),
        "grandparent_rating_key": ""
        if item.grandparent_rating_key is None
        else str(item.grandparent_rating_key),
        "media_type": item.media_type,
        "title": item.full_title,
        "full_title": item.full_title,
        "user": play.user.friendly_name,
        "username": play.user.username,
        "user_id": str(play.user.user_id),
        "progress_percent": str(play.percent_complete),
        "platform": play.platform,
        "player": play.player,
        "unixtime": str(int(now.timestamp())),
        "timestamp": now.strftime("%H:%M"),
    }


def render_template(template: str, parameters: Mapping[str, str]) -> Any:
    """Tautulli's rendering of a JSON Data template: parse it, then str.format every string key and value.

    Invalid JSON renders as `""` (Tautulli then sends an empty body).
    """
    try:
        document = json.loads(template)
    except ValueError:
        return ""
    formatter = _KeepUnknown()

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return formatter.vformat(node, (), parameters)
        if isinstance(node, list):
            return [walk(value) for value in node]
        if isinstance(node, dict):
            return {walk(key): walk(value) for key, value in node.items()}
        return node

    return walk(document)


def send_webhook(
    gateway_url: str,
    play: Play,
    *,
    action: str = "stop",
    template: str = DOCUMENTED_TEMPLATE,
    server_machine_id: str = "simulated-pms-0001",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> httpx.Response:
    """POST what Tautulli's Webhook agent would send for `play` (one attempt, no retry, like Tautulli)."""
    body = render_template(
        template, notification_parameters(play, action=action, server_machine_id=server_machine_id)
    )
    return httpx.post(
        gateway_url,
        json=body or None,
        headers={"Content-Type": "application/json", **(headers or {})},
        timeout=timeout,
    )


def local_midnight(day: date, timezone: str) -> datetime:
    """Midnight of `day` in `timezone`, as an aware UTC datetime (to place plays on day boundaries)."""
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone)).astimezone(UTC)


def demo_items(count: int, *, first_rating_key: int = 1000) -> list[HistoryItem]:
    """`count` movies with consecutive rating keys, for tests and benchmarks without a Plex library."""
    return [
        HistoryItem(
            rating_key=first_rating_key + n, title=f"Movie {n}", year=1990 + n % 35, duration_seconds=5400
        )
        for n in range(count)
    ]
