"""What the Sonarr, Radarr and Overseerr simulators share: X-Api-Key auth, a request counter, injected
latency and failures (random at `failure_rate`, or scripted with `fail_next`), and webhook delivery.

Like the real arrs, a simulator with `Controls.webhook_url` set posts its webhook (Connect → Webhook) when
something is deleted through its API: the delivery happens before the API call answers, so a test sees
both at once."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse


@dataclass
class Controls:
    """Knobs and counters of one simulator; tests change them while it runs."""

    api_key: str
    seed: int = 0
    failure_rate: float = 0.0
    failure_status: int = 503
    latency_seconds: float = 0.0
    fail_next: list[int] = field(default_factory=list)  # statuses for the next authorized requests
    requests_made: int = 0
    paths: list[str] = field(default_factory=list)  # every path asked for, in order
    webhook_url: str | None = None  # where delete events go, as configured in Connect → Webhook
    webhooks_sent: list[dict[str, Any]] = field(default_factory=list)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


def install_controls(app: FastAPI, controls: Controls, public_paths: frozenset[str] = frozenset()) -> None:
    """Count every request, then: latency, 401 without the key (X-Api-Key or ?apikey=), then failures."""

    @app.middleware("http")
    async def _controls(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        controls.requests_made += 1
        controls.paths.append(request.url.path)
        if controls.latency_seconds:
            await asyncio.sleep(controls.latency_seconds)
        key = request.headers.get("x-api-key") or request.query_params.get("apikey")
        if request.url.path not in public_paths and key != controls.api_key:
            return JSONResponse({"message": "Unauthorized"}, status_code=401)
        if controls.fail_next:
            return JSONResponse({"message": "simulated failure"}, status_code=controls.fail_next.pop(0))
        if controls.failure_rate and controls.rng.random() < controls.failure_rate:
            return JSONResponse({"message": "simulated failure"}, status_code=controls.failure_status)
        return await call_next(request)


def create_arr_app(
    name: str,
    resource: str,
    state_name: str,
    items: list[dict[str, Any]],
    status: dict[str, Any],
    *,
    api_key: str,
    seed: int,
    failure_rate: float,
    latency: float,
    delete_payload: Callable[[dict[str, Any], bool], dict[str, Any]],
) -> FastAPI:
    """What Sonarr and Radarr share: `/ping`, `/api/v3/system/status`, and `/api/v3/<resource>[/{id}]`
    over `app.state.<state_name>` (starting as `items`; tests replace it while the app runs).
    `DELETE /api/v3/<resource>/{id}[?deleteFiles=true]` removes the item and sends
    `delete_payload(item, deleteFiles)` to the configured webhook."""
    app = FastAPI(title=f"{name} simulator")
    controls = Controls(api_key=api_key, seed=seed, failure_rate=failure_rate, latency_seconds=latency)
    app.state.controls = controls
    app.state.version = status["version"]
    setattr(app.state, state_name, items)
    install_controls(app, controls, public_paths=frozenset({"/ping"}))

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"status": "OK"}

    @app.get("/api/v3/system/status")
    def system_status() -> dict[str, Any]:
        return status

    @app.get(f"/api/v3/{resource}")
    def all_items() -> list[dict[str, Any]]:
        return getattr(app.state, state_name)

    def find(item_id: int) -> dict[str, Any]:
        for item in getattr(app.state, state_name):
            if item["id"] == item_id:
                return item
        raise HTTPException(404, detail="NotFound")

    @app.get(f"/api/v3/{resource}/{{item_id}}")
    def one_item(item_id: int) -> dict[str, Any]:
        return find(item_id)

    @app.delete(f"/api/v3/{resource}/{{item_id}}")
    def delete_item(item_id: int, delete_files: bool = Query(False, alias="deleteFiles")) -> dict[str, Any]:
        item = find(item_id)
        getattr(app.state, state_name).remove(item)
        notify(app, delete_payload(item, delete_files))
        return {}

    return app


def notify(app: FastAPI, payload: dict[str, Any]) -> None:
    """Remember `payload` and post it to the simulator's webhook, if one is configured, as the arr does."""
    controls: Controls = app.state.controls
    controls.webhooks_sent.append(payload)
    if controls.webhook_url:
        user_agent = f"{payload['instanceName']}/{app.state.version} (ubuntu 22.04)"
        send_arr_webhook(controls.webhook_url, payload, user_agent=user_agent)


def without_nulls(value: Any) -> Any:
    """Drop None recursively, as the arrs' serializer does (NullValueHandling.Ignore)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def send_arr_webhook(
    url: str,
    payload: Mapping[str, Any],
    *,
    user_agent: str,
    username: str | None = None,
    password: str | None = None,
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
) -> httpx.Response:
    """Deliver `payload` the way Sonarr/Radarr's WebhookProxy does: indented camelCase JSON, no nulls,
    pre-emptive Basic auth when a username or password is set, extra headers as configured."""
    body = json.dumps(without_nulls(dict(payload)), indent=2)
    request_headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "User-Agent": user_agent,
        **dict(headers or {}),
    }
    auth = (username or "", password or "") if (username or password) else None
    return httpx.request(method, url, content=body, headers=request_headers, auth=auth, timeout=100)
