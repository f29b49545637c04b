"""An Overseerr simulator: the paged `/api/v1/request` list (take/skip, filter, sort, `pageInfo`),
`/api/v1/status` (public, as in Overseerr) and `/api/v1/auth/me`, with X-Api-Key auth; and Overseerr's
webhook notifications rendered from its default JSON template (every value a string, absent entities
`null`). `app.state.controls`, `app.state.requests` (API-shaped dicts, newest last).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException, Query

from simulators._arr import Controls, install_controls

OVERSEERR_VERSION = "1.33.2"
REQUEST_STATUS_NUMBER = {"PENDING": 1, "APPROVED": 2, "DECLINED": 3, "FAILED": 4, "COMPLETED": 5}
MEDIA_STATUS_NAME = {1: "UNKNOWN", 2: "PENDING", 3: "PROCESSING", 4: "PARTIALLY_AVAILABLE", 5: "AVAILABLE"}
_USERS = [
    {"id": 1, "email": "admin@example.com", "plexUsername": "admin", "username": None, "userType": 1},
    {"id": 2, "email": "bob@example.com", "plexUsername": "bob", "username": "bob", "userType": 1},
    {"id": 3, "email": "carol@example.com", "plexUsername": None, "username": None, "userType": 2},
]


def _user(raw: Mapping[str, Any]) -> dict[str, Any]:
    display = raw["username"] or raw["plexUsername"] or raw["email"]
    return {
        "permissions": 2 if raw["id"] == 1 else 32,
        "id": raw["id"],
        "email": raw["email"],
        "plexUsername": raw["plexUsername"],
        "username": raw["username"],
        "recoveryLinkExpirationDate": None,
        "userType": raw["userType"],
        "plexId": 1000 + raw["id"],
        "avatar": f"https://plex.tv/users/{raw['id']:08x}/avatar",
        "movieQuotaLimit": None,
        "movieQuotaDays": None,
        "tvQuotaLimit": None,
        "tvQuotaDays": None,
        "createdAt": "2023-01-01T00:00:00.000Z",
        "updatedAt": "2023-01-01T00:00:00.000Z",
        "requestCount": 0,
        "displayName": display,
    }


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def generate_requests(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` requests as `/api/v1/request` returns them (ids 1..count), a mix of movies and tv."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    requests = []
    for index in range(count):
        request_id = index + 1
        is_tv = index % 3 == 2
        status = rng.choice([1, 2, 2, 2, 3, 5])
        media_status = {1: 2, 2: rng.choice([3, 4, 5]), 3: 1, 5: 5}.get(status, 3)
        created = start + timedelta(hours=index * 7)
        updated = created + timedelta(hours=rng.randint(0, 48))
        media = {
            "downloadStatus": [],
            "downloadStatus4k": [],
            "id": 500 + request_id,
            "mediaType": "tv" if is_tv else "movie",
            "tmdbId": rng.randint(1_000, 900_000),
            "tvdbId": rng.randint(70_000, 450_000) if is_tv else None,
            "imdbId": None,
            "status": media_status,
            "status4k": 1,
            "createdAt": _iso(created),
            "updatedAt": _iso(updated),
            "lastSeasonChange": _iso(created),
            "mediaAddedAt": _iso(updated) if media_status in (4, 5) else None,
            "serviceId": 0,
            "serviceId4k": None,
            "externalServiceId": rng.randint(1, 500),
            "externalServiceId4k": None,
            "externalServiceSlug": None,
            "externalServiceSlug4k": None,
            "ratingKey": str(rng.randint(1000, 99999)) if media_status in (4, 5) else None,
            "ratingKey4k": None,
        }
        requester = _user(_USERS[index % len(_USERS)])
        requests.append(
            {
                "id": request_id,
                "status": status,
                "createdAt": _iso(created),
                "updatedAt": _iso(updated),
                "type": media["mediaType"],
                "is4k": index % 11 == 10,
                "serverId": 0,
                "profileId": 1,
                "rootFolder": "/tv" if is_tv else "/movies",
                "languageProfileId": 1 if is_tv else None,
                "tags": [],
                "isAutoRequest": False,
                "media": media,
                "seasons": [{"id": request_id, "seasonNumber": 1, "status": status}] if is_tv else [],
                "modifiedBy": _user(_USERS[0]) if status in (2, 3) else None,
                "requestedBy": requester,
                "seasonCount": 1 if is_tv else 0,
            }
        )
    return requests


def _matches(request: Mapping[str, Any], filter_: str) -> bool:
    """Overseerr's request filters (server/routes/request.ts), on request and media status."""
    status, media_status = request["status"], request["media"]["status"]
    return {
        "all": True,
        "approved": status == 2,
        "pending": status == 1,
        "declined": status == 3,
        "failed": status == 4,
        "completed": status == 5,
        "available": media_status == 5,
        "processing": status == 2 and media_status in (3, 4),
        "unavailable": status in (1, 2) and media_status != 5,
    }.get(filter_, False)


def create_overseerr_app(
    requests: Sequence[dict[str, Any]] | None = None,
    *,
    api_key: str = "overseerr-api-key",
    count: int = 30,
    seed: int = 0,
    failure_rate: float = 0.0,
    latency: float = 0.0,
) -> FastAPI:
    """The simulator as an ASGI app; `requests` defaults to `generate_requests(count, seed)`."""
    app = FastAPI(title="Overseerr simulator")
    controls = Controls(api_key=api_key, seed=seed, failure_rate=failure_rate, latency_seconds=latency)
    app.state.controls = controls
    app.state.requests = list(requests) if requests is not None else generate_requests(count, seed)
    install_controls(app, controls, public_paths=frozenset({"/api/v1/status"}))

    @app.get("/api/v1/status")
    def status() -> dict[str, Any]:
        return {
            "version": OVERSEERR_VERSION,
            "commitTag": f"v{OVERSEERR_VERSION}",
            "updateAvailable": False,
            "commitsBehind": 0,
            "restartRequired": False,
        }

    @app.get("/api/v1/auth/me")
    def me() -> dict[str, Any]:
        return _user(_USERS[0])

    @app.get("/api/v1/request")
    def request_list(
        take: int = Query(10, ge=1),
        skip: int = Query(0, ge=0),
        filter: str = "all",
        sort: str = "added",
        requestedBy: int | None = None,
    ) -> dict[str, Any]:
        chosen = [r for r in app.state.requests if _matches(r, filter)]
        if requestedBy is not None:
            chosen = [r for r in chosen if r["requestedBy"]["id"] == requestedBy]
        key = "updatedAt" if sort == "modified" else "id"
        chosen.sort(key=lambda r: r[key], reverse=True)
        return {
            "pageInfo": {
                "pages": math.ceil(len(chosen) / take),
                "pageSize": take,
                "results": len(chosen),
                "page": math.ceil(skip / take) + 1,
            },
            "results": chosen[skip : skip + take],
        }

    @app.get("/api/v1/request/{request_id}")
    def one_request(request_id: int) -> dict[str, Any]:
        for request in app.state.requests:
            if request["id"] == request_id:
                return request
        raise HTTPException(404, detail="Request not found.")

    return app


# The webhook agent's default template (server/lib/settings.ts), byte for byte after base64 decoding.
DEFAULT_TEMPLATE = json.loads(
    '{"notification_type":"{{notification_type}}","event":"{{event}}","subject":"{{subject}}",'
    '"message":"{{message}}","image":"{{image}}","{{media}}":{"media_type":"{{media_type}}",'
    '"tmdbId":"{{media_tmdbid}}","tvdbId":"{{media_tvdbid}}","status":"{{media_status}}",'
    '"status4k":"{{media_status4k}}"},"{{request}}":{"request_id":"{{request_id}}",'
    '"requestedBy_email":"{{requestedBy_email}}","requestedBy_username":"{{requestedBy_username}}",'
    '"requestedBy_avatar":"{{requestedBy_avatar}}",'
    '"requestedBy_settings_discordId":"{{requestedBy_settings_discordId}}",'
    '"requestedBy_settings_telegramChatId":"{{requestedBy_settings_telegramChatId}}"},'
    '"{{issue}}":{"issue_id":"{{issue_id}}","issue_type":"{{issue_type}}","issue_status":"{{issue_status}}",'
    '"reportedBy_email":"{{reportedBy_email}}","reportedBy_username":"{{reportedBy_username}}",'
    '"reportedBy_avatar":"{{reportedBy_avatar}}",'
    '"reportedBy_settings_discordId":"{{reportedBy_settings_discordId}}",'
    '"reportedBy_settings_telegramChatId":"{{reportedBy_settings_telegramChatId}}"},'
    '"{{comment}}":{"comment_message":"{{comment_message}}","commentedBy_email":"{{commentedBy_email}}",'
    '"commentedBy_username":"{{commentedBy_username}}","commentedBy_avatar":"{{commentedBy_avatar}}",'
    '"commentedBy_settings_discordId":"{{commentedBy_settings_discordId}}",'
    '"commentedBy_settings_telegramChatId":"{{commentedBy_settings_telegramChatId}}"},"{{extra}}":[]}'
)
_EVENTS = {
    "MEDIA_PENDING": "New {kind} Request",
    "MEDIA_APPROVED": "{kind} Request Approved",
    "MEDIA_AUTO_APPROVED": "{kind} Request Automatically Approved",
    "MEDIA_AVAILABLE": "{kind} Request Now Available",
    "MEDIA_DECLINED": "{kind} Request Declined",
    "MEDIA_FAILED": "{kind} Request Failed",
}
_VARIABLE = re.compile(r"\{\{(\w+)\}\}")


def _variables(notification_type: str, request: Mapping[str, Any] | None) -> dict[str, str]:
    if request is None:
        return {
            "notification_type": notification_type,
            "subject": "Test Notification",
            "message": "Check check, 1, 2, 3. Are we coming in clear?",
        }
    media, user = request["media"], request["requestedBy"]
    kind = ("4K " if request.get("is4k") else "") + ("Series" if media["mediaType"] == "tv" else "Movie")
    return {
        "notification_type": notification_type,
        "event": _EVENTS[notification_type].format(kind=kind),
        "subject": f"Request {request['id']} (2024)",
        "message": "An overview from TMDB.",
        "image": "https://image.tmdb.org/t/p/w600_and_h900_bestv2/poster.jpg",
        "media_type": media["mediaType"],
        "media_tmdbid": str(media.get("tmdbId") or ""),
        "media_tvdbid": str(media.get("tvdbId") or ""),
        "media_status": MEDIA_STATUS_NAME.get(media["status"], ""),
        "media_status4k": MEDIA_STATUS_NAME.get(media["status4k"], ""),
        "request_id": str(request["id"]),
        "requestedBy_email": user.get("email") or "",
        "requestedBy_username": user.get("displayName") or "",
        "requestedBy_avatar": user.get("avatar") or "",
        "requestedBy_settings_discordId": "",
        "requestedBy_settings_telegramChatId": "",
    }


def _render(template: Mapping[str, Any], variables: Mapping[str, str], has: set[str]) -> dict[str, Any]:
    """Overseerr's parseKeys: entity keys become their name (or null), each `{{var}}` replaced once."""
    rendered: dict[str, Any] = {}
    for key, value in template.items():
        entity = key[2:-2] if _VARIABLE.fullmatch(key) else None
        if entity == "extra":
            rendered["extra"] = []
        elif entity is not None:
            rendered[entity] = _render(value, variables, has) if entity in has else None
        elif isinstance(value, str):
            for name in _VARIABLE.findall(value):  # every default-template variable is known: "" if unset
                value = value.replace(f"{{{{{name}}}}}", variables.get(name, ""), 1)
            rendered[key] = value
        else:
            rendered[key] = value
    return rendered


def notification_payload(
    notification_type: str,
    request: Mapping[str, Any] | None = None,
    *,
    extra: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The default-template body for a MEDIA_* notification about `request` (an API-shaped request), or
    TEST_NOTIFICATION without one."""
    has = {"media", "request"} if request is not None else set()
    payload = _render(DEFAULT_TEMPLATE, _variables(notification_type, request), has)
    if extra is not None:
        payload["extra"] = extra
    elif request is not None and request["media"]["mediaType"] == "tv":
        seasons = ", ".join(str(s["seasonNumber"]) for s in request.get("seasons", []))
        payload["extra"] = [{"name": "Requested Seasons", "value": seasons}]
    return payload


def send_notification(
    url: str,
    notification_type: str,
    request: Mapping[str, Any] | None = None,
    *,
    authorization: str | None = None,
) -> httpx.Response:
    """POST a notification the way Overseerr's webhook agent does (axios: compact JSON, optional
    Authorization header sent verbatim, no retry)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/plain, */*"}
    if authorization:
        headers["Authorization"] = authorization
    body = json.dumps(notification_payload(notification_type, request), separators=(",", ":"))
    return httpx.post(url, content=body, headers=headers, timeout=30)
