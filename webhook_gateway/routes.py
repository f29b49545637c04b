"""HTTP routes. Thin: read the delivery, let its source parse it, record it, answer."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from smartplex_sync.errors import PayloadError
from smartplex_sync.models import Action, Source
from smartplex_sync.requests import ParsedDelivery
from smartplex_sync.store import schedules, webhooks
from webhook_gateway import sources
from webhook_gateway.auth import is_authorized
from webhook_gateway.deps import Gateway, GatewayDep
from webhook_gateway.intake import decode

log = logging.getLogger(__name__)


class WebhookAccepted(BaseModel):
    id: int = Field(description="The webhook_log row of this delivery.")
    source: Source
    event_type: str
    action: str = Field(description="Deployments it will run, or ignored / recorded / test.")
    sync_requests: list[dict[str, Any]]
    note: str | None = None


class WebhookError(BaseModel):
    id: int | None = Field(description="The webhook_log row that recorded the rejected delivery.")
    error: str
    detail: str


SOURCE_FORMATS = {
    Source.PLEX: "multipart/form-data with a `payload` JSON part (and an optional `thumb` JPEG), as Plex sends.",
    Source.TAUTULLI: "The JSON of Tautulli's Webhook agent (docs/webhooks.md has the template to paste).",
    Source.SONARR: "Sonarr v4 webhook JSON (`eventType`, `series`, `episodes`, `isUpgrade` ...).",
    Source.RADARR: "Radarr v5 webhook JSON (`eventType`, `movie`, `isUpgrade` ...).",
    Source.OVERSEERR: "Overseerr / Jellyseerr webhook JSON (`notification_type`, `media`, `request` ...).",
}

router = APIRouter()


def _reject(row_id: int | None, error: PayloadError) -> JSONResponse:
    body = WebhookError(
        id=row_id, error=_ERROR_CODES.get(error.status_code, "bad_request"), detail=error.message
    )
    return JSONResponse(body.model_dump(), status_code=error.status_code)


_ERROR_CODES = {
    401: "unauthorized",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_payload",
}


async def receive(source: Source, request: Request, gateway: Gateway) -> JSONResponse:
    """Record the delivery (committed before we answer), then hand it to the dispatcher."""
    token = gateway.settings.webhook_token
    if not is_authorized(request, token.get_secret_value() if token else None):
        # Recorded without its body: we keep no data from whoever sent it, only that it happened.
        error = PayloadError("missing or wrong webhook token (see docs/webhooks.md)", 401)
        row_id = await _record(gateway, source, None, None, error)
        return _reject(row_id, error)

    decoded = await decode(source, request, gateway.settings.max_body_bytes)
    parsed, error = (None, decoded.error) if decoded.error else _parse(source, decoded.payload)
    row_id = await _record(gateway, source, decoded.stored, parsed, error)
    if error is not None:
        log.info("%s webhook %d rejected (%d): %s", source.value, row_id, error.status_code, error.message)
        return _reject(row_id, error)
    assert parsed is not None
    log.info("%s %s → webhook %d: %s", source.value, parsed.event_type, row_id, parsed.action_label)
    return _accept(gateway, row_id, source, parsed, parsed.note)


def _accept(
    gateway: Gateway, row_id: int, source: Source, parsed: ParsedDelivery, note: str | None
) -> JSONResponse:
    """Wake the dispatcher if there is something to dispatch, and answer 202."""
    if parsed.requests:
        gateway.dispatcher_notify()
    accepted = WebhookAccepted(
        id=row_id,
        source=source,
        event_type=parsed.event_type,
        action=parsed.action_label,
        sync_requests=[r.to_json() for r in parsed.requests],
        note=note,
    )
    return JSONResponse(accepted.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)


def _parse(source: Source, payload: Any) -> tuple[ParsedDelivery | None, PayloadError | None]:
    try:
        return sources.parse(source, payload), None
    except PayloadError as exc:
        return None, exc
    except Exception:  # a parser bug must not cost the delivery: keep it, answer 422, fix, replay
        log.exception("%s parser failed", source.value)
        return None, PayloadError("the payload could not be interpreted", 422)


async def _record(
    gateway: Gateway,
    source: Source,
    payload: Any,
    parsed: ParsedDelivery | None,
    error: PayloadError | None,
) -> int:
    if parsed is not None:
        fields = {
            "event_type": parsed.event_type,
            "action": parsed.action_label,
            "requests": parsed.requests,
            "scan_grace": timedelta(seconds=gateway.settings.plex_scan_grace_seconds),
        }
    else:
        assert error is not None
        fields = {
            "event_type": error.event_type,
            "action": Action.REJECTED.value,
            "http_status": error.status_code,
            "error_message": error.message,
        }
    try:
        return await run_in_threadpool(
            webhooks.record, gateway.engine, source=source.value, payload=payload, **fields
        )
    except Exception as exc:
        # Not recorded means not acknowledged: the sender must see a failure (it is not the input's fault).
        log.exception("could not record a %s delivery", source.value)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the webhook log is unavailable") from exc


def _add_webhook_route(source: Source) -> None:
    async def handler(request: Request, gateway: GatewayDep) -> JSONResponse:
        return await receive(source, request, gateway)

    # Sonarr, Radarr and Tautulli can be set to PUT; it is the same endpoint, documented once (as POST).
    router.add_api_route(f"/api/webhooks/{source.value}", handler, methods=["PUT"], include_in_schema=False)
    router.add_api_route(
        f"/api/webhooks/{source.value}",
        handler,
        methods=["POST"],
        name=f"{source.value}_webhook",
        summary=f"Receive a {source.value.capitalize()} webhook",
        description=SOURCE_FORMATS[source],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=WebhookAccepted,
        responses={code: {"model": WebhookError} for code in (400, 401, 413, 415, 422)},
        tags=["webhooks"],
    )


for _source in Source:
    _add_webhook_route(_source)


def require_token(request: Request, gateway: GatewayDep) -> None:
    token = gateway.settings.webhook_token
    if not is_authorized(request, token.get_secret_value() if token else None):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong webhook token")


Authorized = Annotated[None, Depends(require_token)]


@router.post(
    "/api/webhooks/{webhook_id}/replay",
    tags=["webhooks"],
    summary="Replay a recorded delivery",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WebhookAccepted,
    responses={404: {"model": WebhookError}, 409: {"model": WebhookError}},
)
async def replay(
    webhook_id: Annotated[int, Path(ge=1, le=2**63 - 1)], gateway: GatewayDep, _: Authorized
) -> JSONResponse:
    """Parse a stored delivery again with today's parsers and record it as a new delivery (which the
    dispatcher then turns into flow runs). For deliveries rejected by a since-fixed parser, or to re-run
    the syncs a delivery asked for."""
    original = await run_in_threadpool(webhooks.get, gateway.engine, webhook_id)
    if original is None:
        return _reject(None, PayloadError(f"no webhook {webhook_id}", 404))
    payload = original["payload"]
    if payload is None or (isinstance(payload, dict) and set(payload) == {"raw"}):
        return _reject(
            webhook_id, PayloadError(f"webhook {webhook_id} has no readable payload to replay", 409)
        )
    source = Source(original["source"])
    parsed, error = _parse(source, payload)
    if error is not None:
        return _reject(webhook_id, error)
    assert parsed is not None
    row_id = await _record(gateway, source, payload, parsed, None)
    note = f"replay of webhook {webhook_id}" + (f"; {parsed.note}" if parsed.note else "")
    return _accept(gateway, row_id, source, parsed, note)


@router.get("/api/webhooks/status", tags=["status"], summary="Deliveries per source and the latest ones")
async def webhook_status(gateway: GatewayDep, _: Authorized, limit: int = 20) -> dict[str, Any]:
    return await run_in_threadpool(webhooks.summary, gateway.engine, recent=max(1, min(limit, 200)))


@router.get("/api/sync/status", tags=["status"], summary="Each service's schedule and its last run")
async def sync_status(gateway: GatewayDep, _: Authorized) -> dict[str, Any]:
    """`sync_schedule` as the mirror last saw Prefect: interval, enabled, next and last run, last error."""
    rows = await run_in_threadpool(schedules.read_schedules, gateway.engine)
    fields = (
        "deployment",
        "enabled",
        "interval_hours",
        "next_run_at",
        "last_run_at",
        "last_status",
        "last_error",
    )
    return {
        "services": {
            row.service: {name: getattr(row, name) for name in (*fields, "run_count")} for row in rows
        },
        "mirrored_at": max((row.mirrored_at for row in rows if row.mirrored_at), default=None),
    }


@router.get("/healthz", tags=["status"], summary="Liveness and database reachability")
async def healthz(gateway: GatewayDep) -> JSONResponse:
    def ping() -> None:
        with gateway.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await run_in_threadpool(ping)
    except Exception as exc:
        return JSONResponse({"status": "unavailable", "database": str(exc)[:200]}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok", "dispatcher": gateway.dispatcher_state()})
