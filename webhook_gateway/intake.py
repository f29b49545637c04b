"""Reading a delivery off the wire: size limit, content type, JSON or Plex's multipart `payload` part.

Decoding never raises: a body we cannot read comes back with `error` set and whatever text it had, so the
gateway can still record it before answering 4xx.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request

from smartplex_sync.errors import PayloadError
from smartplex_sync.models import Source

_MAX_STORED_RAW = 64 * 1024  # undecodable bodies are kept for troubleshooting, cut to this size


@dataclass(frozen=True)
class Decoded:
    payload: Any  # what the source's parser gets
    stored: Any  # what webhook_log.payload keeps
    error: PayloadError | None = None


def _raw(text: str) -> dict[str, str]:
    return {"raw": text[:_MAX_STORED_RAW]}


def _json(body: bytes) -> Decoded:
    if not body.strip():
        return Decoded(None, None)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("latin-1")
        return Decoded(None, _raw(text), PayloadError("body is not UTF-8 text"))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Decoded(None, _raw(text), PayloadError(f"body is not valid JSON: {exc}"))
    return Decoded(value, value)


def _content_type(request: Request) -> str:
    media_type, _ = parse_options_header(request.headers.get("content-type", ""))
    return media_type.decode("latin-1").lower()  # header bytes are latin-1; never fails


async def _read_body(request: Request, max_bytes: int) -> bytes | PayloadError:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        return PayloadError(f"body of {declared} bytes is over the {max_bytes}-byte limit", 413)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                return PayloadError(f"body is over the {max_bytes}-byte limit", 413)
            chunks.append(chunk)
    except ClientDisconnect:
        return PayloadError("client disconnected before the body was complete")
    body = b"".join(chunks)
    request._body = body  # lets request.form() parse what we already read
    return body


async def _plex(request: Request, body: bytes) -> Decoded:
    """Plex posts multipart/form-data: a `payload` part with the JSON and sometimes a `thumb` JPEG."""
    content_type = _content_type(request)
    if content_type == "application/json":  # not what Plex sends, but harmless to accept
        return _json(body)
    if content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return Decoded(
            None,
            _raw(body.decode("utf-8", "replace")),
            PayloadError(
                f"Plex webhooks are multipart/form-data with a `payload` part, not {content_type!r}", 415
            ),
        )
    try:
        form = await request.form(max_files=4, max_fields=32, max_part_size=len(body) + 1)
    except Exception as exc:  # python-multipart raises several unrelated types on malformed input
        return Decoded(
            None, _raw(body.decode("utf-8", "replace")), PayloadError(f"malformed form body: {exc}")
        )
    try:
        part = form.get("payload")
        for value in form.values():
            if isinstance(value, UploadFile):
                await value.read()  # the thumbnail is read and dropped, never stored
        if part is None:
            return Decoded(None, None, PayloadError("multipart body has no `payload` part"))
        text = (await part.read()).decode("utf-8", "replace") if isinstance(part, UploadFile) else part
    finally:
        await form.close()
    return _json(text.encode())


def _form_fields(body: bytes) -> Decoded:
    fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return Decoded(fields, fields)


async def decode(source: Source, request: Request, max_bytes: int) -> Decoded:
    body = await _read_body(request, max_bytes)
    if isinstance(body, PayloadError):
        return Decoded(None, None, body)
    if source is Source.PLEX:
        return await _plex(request, body)
    content_type = _content_type(request)
    if content_type in ("", "application/json") or content_type.endswith("+json"):
        return _json(body)
    if source is Source.TAUTULLI and content_type == "application/x-www-form-urlencoded":
        # Tautulli sends `data=` (form fields) when the user's JSON headers change the Content-Type.
        return _form_fields(body)
    return Decoded(
        None,
        _raw(body.decode("utf-8", "replace")),
        PayloadError(f"{source.value} webhooks are application/json, not {content_type!r}", 415),
    )
