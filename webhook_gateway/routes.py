"""HTTP routes. Thin: read the delivery, let its source parse it, record it, answer."""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from smartplex_sync.errors import PayloadError
from smartplex_sync.models import SERVICES, Source
from smartplex_sync.requests import ParsedDelivery
from smartplex_sync.store import schedules, webhooks
from smartplex_sync.store.engine import check_writable
from webhook_gateway import auth, deliveries
from webhook_gateway.attribution import Sender
from webhook_gateway.deps import Gateway, GatewayDep
from webhook_gateway.intake import decode
from webhook_gateway.limits import Refusal
from webhook_gateway.sources import SOURCES, WebhookSource
from webhook_gateway.supabase_auth import SignInError, looks_like_jwt

log = logging.getLogger(__name__)


class WebhookAccepted(BaseModel):
    id: uuid.UUID = Field(description="The webhook_log row of this delivery.")
    source: Source
    event_type: str
    action: str = Field(description="Deployments it will run, or ignored / recorded / test.")
    sync_requests: list[dict[str, Any]] = Field(
        description="What it asks each deployment to do, per Plex server (SmartPlex's servers.id)."
    )
    note: str | None = None


class WebhookError(BaseModel):
    id: uuid.UUID | None = Field(description="The webhook_log row that recorded the rejected delivery.")
    error: str
    detail: str


_REJECTIONS: dict[int | str, dict[str, Any]] = {
    code: {"model": WebhookError} for code in (400, 401, 408, 413, 415)
}
_REJECTIONS[422] = {
    "model": WebhookError,
    "description": "Not what the service sends, or not attributable: no Plex server of the sender (by "
    "its webhook secret) is the one the delivery names (`unattributed`). Recorded, nothing synced.",
}
_REJECTIONS[429] = {
    "model": WebhookError,
    "description": "Over the source's rate limit (docs/webhooks.md#limits); `id` is null for refusals "
    "that were counted rather than recorded.",
    "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
}
_REJECTIONS[503] = {
    "model": WebhookError,
    "description": "The webhook log could not be written (database locked or unreachable): the delivery "
    "was not kept. Nothing was recorded, so `id` is null.",
    "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
}
RETRY_AFTER_SECONDS = 5


class StoreUnavailable(Exception):
    """The database could not be reached or written within SMARTPLEX_DATABASE_WAIT_SECONDS."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def store_unavailable(_: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After, in the body shape of every other refusal."""
    message = (
        exc.message
        if isinstance(exc, StoreUnavailable)
        else f"the database is unavailable ({_describe(exc)})"
    )
    body = WebhookError(id=None, error="unavailable", detail=message)
    return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


router = APIRouter()


def _reject(
    row_id: uuid.UUID | None, error: PayloadError, headers: dict[str, str] | None = None
) -> JSONResponse:
    code = error.code or _ERROR_CODES.get(error.status_code, "bad_request")
    body = WebhookError(id=row_id, error=code, detail=error.message)
    if error.status_code == 408:  # the sender may still be trickling its body: do not wait for the rest
        headers = {**(headers or {}), "Connection": "close"}
    if error.status_code == 415:  # RFC 9110 §15.5.16: say which content coding we take
        headers = {**(headers or {}), "Accept-Encoding": "identity"}
    return JSONResponse(body.model_dump(mode="json"), status_code=error.status_code, headers=headers)


_ERROR_CODES = {
    401: "unauthorized",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_payload",
    429: "rate_limited",
}


async def receive(source: Source, request: Request, gateway: Gateway) -> JSONResponse:
    """Record the delivery (committed before we answer), then hand it to the dispatcher."""
    refusal = gateway.limiter.admit(source)
    if refusal is not None:
        return await _refuse_over_limit(gateway, source, refusal)
    sender = await gateway.senders.identify(request, source)
    if isinstance(sender, str):
        # Recorded without its body: we keep no data from whoever sent it, only that it happened.
        refused = PayloadError(sender, 401)
        recorded = await _record(gateway, source, None, None, refused, None)
        log.info("%s webhook %s refused (401): %s", source.value, recorded.row_id, sender)
        return _reject(recorded.row_id, refused)

    decoded = await decode(
        SOURCES[source],
        request,
        max_bytes=gateway.settings.max_body_bytes,
        timeout_seconds=gateway.settings.body_timeout_seconds,
    )
    parsed: ParsedDelivery | None = None
    error: PayloadError | None = decoded.error
    if error is None:
        parsed, error = deliveries.interpret(source, decoded.payload)
    recorded = await _record(gateway, source, decoded.stored, parsed, error, sender)
    if recorded.error is not None:
        log.info(
            "%s webhook %s rejected (%d): %s",
            source.value, recorded.row_id, recorded.error.status_code, recorded.error.message,
        )  # fmt: skip
        return _reject(recorded.row_id, recorded.error)
    assert parsed is not None
    event = parsed.event_type if parsed.event_type.isprintable() else repr(parsed.event_type)
    log.info("%s %s → webhook %s: %s", source.value, event, recorded.row_id, parsed.action_label)
    return _accept(gateway, recorded, source, parsed, parsed.note)


async def _refuse_over_limit(gateway: Gateway, source: Source, refusal: Refusal) -> JSONResponse:
    """429 with Retry-After. Only some refusals get a row (see `limits`), always without the body."""
    error = PayloadError(refusal.message, 429)
    row_id = None
    if refusal.record:
        log.warning("%s", refusal.message)
        with contextlib.suppress(StoreUnavailable):  # the store being down does not change the answer
            row_id = (await _record(gateway, source, None, None, error, None)).row_id
    return _reject(row_id, error, {"Retry-After": str(refusal.retry_after)})


def _accept(
    gateway: Gateway, recorded: deliveries.Recorded, source: Source, parsed: ParsedDelivery, note: str | None
) -> JSONResponse:
    """Wake the dispatcher if there is something to dispatch, and answer 202."""
    if recorded.requests:
        gateway.dispatcher_notify()
    accepted = WebhookAccepted(
        id=recorded.row_id,
        source=source,
        event_type=parsed.event_type,
        action=parsed.action_label,
        sync_requests=[r.to_json() for r in recorded.requests],
        note=note,
    )
    return JSONResponse(accepted.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)


def _scan_grace(gateway: Gateway) -> timedelta:
    return timedelta(seconds=gateway.settings.plex_scan_grace_seconds)


async def _record(
    gateway: Gateway,
    source: Source,
    payload: Any,
    parsed: ParsedDelivery | None,
    error: PayloadError | None,
    sender: Sender | None,
) -> deliveries.Recorded:
    try:
        return await run_in_threadpool(
            deliveries.record, gateway.engine, source, payload, parsed, error, sender, _scan_grace(gateway)
        )
    except Exception as exc:
        # Not recorded means not acknowledged: the sender must see a failure (it is not the input's fault).
        log.error("could not record a %s delivery: %s", source.value, _describe(exc))
        raise StoreUnavailable(
            f"the webhook log could not be written ({_describe(exc)}); the delivery was not kept, send it again"
        ) from exc


def _describe(exc: BaseException) -> str:
    """The database's own words, first line only (no SQL, no parameters)."""
    cause = getattr(exc, "orig", None) or exc
    first = (str(cause) or type(cause).__name__).strip().splitlines()
    return f"{type(cause).__name__}: {first[0] if first else ''}"[:200]


def _add_webhook_route(source: WebhookSource) -> None:
    async def handler(request: Request, gateway: GatewayDep) -> JSONResponse:
        return await receive(source.service, request, gateway)

    # Sonarr, Radarr and Tautulli can be set to PUT; it is the same endpoint, documented once (as POST).
    path = f"/api/webhooks/{source.service.value}"
    runs = ", ".join(sorted(deployment.value for deployment in source.feeds))
    router.add_api_route(path, handler, methods=["PUT"], include_in_schema=False)
    router.add_api_route(
        path,
        handler,
        methods=["POST"],
        name=f"{source.service.value}_webhook",
        summary=f"Receive a {source.service.value.capitalize()} webhook",
        description=f"{source.description} Can run: {runs}.",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=WebhookAccepted,
        responses=_REJECTIONS,
        openapi_extra={"requestBody": {"required": True, "content": source.request_body()}},
        tags=["webhooks"],
    )


for _source in SOURCES.values():
    _add_webhook_route(_source)


_bearer = HTTPBearer(
    auto_error=False,
    description="SMARTPLEX_ADMIN_TOKEN, or a SmartPlex admin's Supabase session token (docs/operations.md).",
)


async def require_admin(
    request: Request,
    gateway: GatewayDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """The admin endpoints: `Authorization: Bearer` with SMARTPLEX_ADMIN_TOKEN or an admin's Supabase session
    token. With neither configured, local clients only. A webhook token never opens them."""
    admin_token, supabase = gateway.settings.admin_token, gateway.supabase_admins
    bearer = credentials.credentials.strip() if credentials else None
    if admin_token is not None and bearer and auth.token_matches([bearer], admin_token.get_secret_value()):
        return
    if supabase is not None and bearer and looks_like_jwt(bearer):
        try:
            await supabase.admin(bearer)
        except SignInError as refused:
            raise HTTPException(refused.status_code, refused.message, _CHALLENGE) from None
        return
    if admin_token is None and supabase is None:
        if auth.is_local(request):
            return
        raise HTTPException(401, auth.not_local_reason(request, "SMARTPLEX_ADMIN_TOKEN"), _CHALLENGE)
    raise HTTPException(401, "missing or wrong admin token (Authorization: Bearer)", _CHALLENGE)


_CHALLENGE = {"WWW-Authenticate": "Bearer"}
Admin = Annotated[None, Depends(require_admin)]


@router.post(
    "/api/webhooks/{webhook_id}/replay",
    tags=["webhooks"],
    summary="Replay a recorded delivery",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WebhookAccepted,
    responses={
        404: {"model": WebhookError},
        409: {"model": WebhookError},
        422: {
            "description": "The stored delivery no longer parses (a `WebhookError`), or the id is not one.",
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [
                            {"$ref": "#/components/schemas/WebhookError"},
                            {"$ref": "#/components/schemas/HTTPValidationError"},
                        ]
                    }
                }
            },
        },
        503: _REJECTIONS[503],
    },
)
async def replay(webhook_id: uuid.UUID, gateway: GatewayDep, _: Admin) -> JSONResponse:
    """Parse a stored delivery again with today's parsers, attribute it again to its user's servers, and
    record it as a new delivery (which the dispatcher then turns into flow runs). For deliveries rejected
    by a since-fixed parser or sent before their server was in SmartPlex, or to re-run the syncs a
    delivery asked for. `smartplex-sync webhooks replay` does the same."""
    try:
        replayed = await run_in_threadpool(
            deliveries.replay, gateway.engine, webhook_id, _scan_grace(gateway)
        )
    except PayloadError as error:
        return _reject(None if error.status_code == 404 else webhook_id, error)
    except Exception as exc:
        log.error("could not replay webhook %s: %s", webhook_id, _describe(exc))
        raise StoreUnavailable(f"the webhook log is unavailable ({_describe(exc)})") from exc
    if replayed.recorded.error is not None:
        return _reject(replayed.recorded.row_id, replayed.recorded.error)
    return _accept(gateway, replayed.recorded, replayed.source, replayed.parsed, replayed.note)


@router.get("/api/webhooks/status", tags=["status"], summary="Deliveries per source and the latest ones")
async def webhook_status(gateway: GatewayDep, _: Admin, limit: int = 20) -> dict[str, Any]:
    return await run_in_threadpool(webhooks.summary, gateway.engine, recent=max(1, min(limit, 200)))


@router.get("/api/sync/status", tags=["status"], summary="Each sync_schedule row and its last run")
async def sync_status(gateway: GatewayDep, _: Admin) -> dict[str, Any]:
    """`sync_schedule` as the mirror last saw Prefect, row by row (one per user and service on SmartPlex's
    per-user table, one per service on its global one): the deployment, interval, enabled, next and last
    run, last status and error."""
    rows = await run_in_threadpool(schedules.read_schedules, gateway.engine)
    fields = (
        "enabled",
        "interval_hours",
        "next_run_at",
        "last_run_at",
        "last_status",
        "last_error",
        "run_count",
    )
    return {
        "schedules": [
            {
                "id": row.id,
                "user_id": row.user_id,
                "service": row.service,
                "deployment": SERVICES[Source(row.service)].deployment.value,
                "slug": row.slug,
                **{name: getattr(row, name) for name in fields},
            }
            for row in rows
        ],
        "mirrored_at": max((row.mirrored_at for row in rows if row.mirrored_at), default=None),
    }


@router.get(
    "/healthz", tags=["status"], summary="Liveness, and whether deliveries are recorded and dispatched"
)
async def healthz(gateway: GatewayDep) -> JSONResponse:
    """200 when a delivery could be written now and every background loop runs. 503 with the reason when
    the database is unreachable or its write lock is held (SQLite), the same cases in which deliveries are
    answered 503; or when a loop (`dispatcher`, `schedule-mirror`) has stopped, which a restart mends."""
    loops = gateway.loops()
    stopped = {name: state for name, state in loops.items() if state.startswith("stopped")}
    try:
        await run_in_threadpool(check_writable, gateway.engine)
    except Exception as exc:
        return JSONResponse(
            {"status": "unavailable", "database": _describe(exc), "loops": loops},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if stopped:
        return JSONResponse({"status": "degraded", "database": "ok", "loops": loops}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok", "loops": loops})
