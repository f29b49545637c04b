"""Reading a delivery off the wire: time and size limits, content type, JSON or Plex's multipart `payload`.

Decoding never raises: a body we cannot read comes back with `error` set and whatever text it had, so the
gateway can still record it before answering 4xx. What is refused here:
- 408: the body was not complete within SMARTPLEX_BODY_TIMEOUT_SECONDS (a sender that stalls);
- 413: the body is over SMARTPLEX_MAX_BODY_BYTES;
- 415: a Content-Type the service does not send, or any Content-Encoding. None of the five services
  compresses its webhooks, and inflating what a stranger sends is how zip bombs get in;
- 400: everything else we cannot read. Not UTF-8; not strict JSON (NaN, Infinity, a number out of range,
  a key twice in one object, nesting deeper than MAX_JSON_DEPTH); a form or multipart body that is
  malformed, truncated, has more than MAX_FORM_PARTS parts, or no `payload` part or two (Plex).
Lone UTF-16 surrogates (`"\\ud800"`: a valid JSON escape that no database can store as text) become U+FFFD.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, cast
from urllib.parse import parse_qsl

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

if TYPE_CHECKING:  # python-multipart declares its callbacks' type for type checkers only
    from python_multipart.multipart import MultipartCallbacks

from smartplex_sync.errors import PayloadError
from webhook_gateway.sources import JSON, MULTIPART, WebhookSource

MAX_JSON_DEPTH = 64  # real payloads nest 3 to 5 levels deep (Plex's Metadata.Guid[], Sonarr's episodes[])
MAX_FORM_PARTS = 32  # Plex sends one or two parts (payload, thumb); Tautulli's form a handful of fields
_MAX_BOUNDARY = 70  # RFC 2046 §5.1.1
_MAX_STORED_RAW = 64 * 1024  # undecodable bodies are kept for troubleshooting, cut to this size
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Decoded:
    payload: Any  # what the source's parser gets
    stored: Any  # what webhook_log.payload keeps
    error: PayloadError | None = None


def _raw(data: bytes | str) -> dict[str, str]:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return {"raw": text[:_MAX_STORED_RAW]}


class _NotStrictJson(ValueError):
    """JSON that `json.loads` takes but RFC 8259, PostgreSQL's jsonb or our parsers would not."""


def _reject_constant(name: str) -> NoReturn:
    raise _NotStrictJson(f"{name} is not a JSON number")


def _clean(text: str) -> str:
    return text if text.isascii() else _LONE_SURROGATE.sub("\ufffd", text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        key = _clean(key)
        if key in result:  # senders differ on which one wins; we do not guess
            raise _NotStrictJson(f"key {key[:40]!r} appears twice in one object")
        result[key] = value
    return result


def _finite(number: float) -> float:
    if not math.isfinite(number):  # 1e400 overflows to inf, which jsonb refuses
        raise _NotStrictJson("a number is out of range (beyond ±1.8e308)")
    return number


def _checked(value: Any) -> Any:
    """`value` with lone surrogates replaced; _NotStrictJson if a number overflowed or it nests deeper
    than MAX_JSON_DEPTH. Iterative, so no depth can exhaust the stack (json.loads itself stops at
    Python's recursion limit). One pass after parsing costs less than a hook called for every number.
    """
    kind = type(value)
    if kind is str:
        return _clean(value)
    if kind is float:
        return _finite(value)
    if kind is not dict and kind is not list:
        return value
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise _NotStrictJson(f"nested deeper than {MAX_JSON_DEPTH} levels")
        for key, child in node.items() if type(node) is dict else enumerate(node):
            kind = type(child)  # exact types: they all come from json.loads
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is str:
                if not child.isascii():
                    node[key] = _clean(child)
            elif kind is float:
                _finite(child)
    return value


def _json(body: bytes, what: str = "body") -> Decoded:
    if not body.strip():
        return Decoded(None, None)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Decoded(None, _raw(body), PayloadError(f"{what} is not UTF-8 text (byte {exc.start})"))
    try:
        value = _checked(json.loads(text, object_pairs_hook=_object, parse_constant=_reject_constant))
    except RecursionError:  # deeper than even json.loads goes
        message = f"{what} is not strict JSON: nested deeper than {MAX_JSON_DEPTH} levels"
        return Decoded(None, _raw(text), PayloadError(message))
    except _NotStrictJson as exc:
        return Decoded(None, _raw(text), PayloadError(f"{what} is not strict JSON: {exc}"))
    except json.JSONDecodeError as exc:
        return Decoded(None, _raw(text), PayloadError(f"{what} is not valid JSON: {exc}"))
    except ValueError:  # the only other one: Python converts at most 4,300 digits to an int
        message = f"{what} is not strict JSON: a number has more than 4300 digits"
        return Decoded(None, _raw(text), PayloadError(message))
    return Decoded(value, value)


def _content_type(request: Request) -> tuple[str, dict[bytes, bytes]]:
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    return media_type.decode("latin-1").lower(), options  # header bytes are latin-1; never fails


async def _read_body(request: Request, max_bytes: int, timeout_seconds: float) -> bytes | PayloadError:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        return PayloadError(f"body of {declared} bytes is over the {max_bytes}-byte limit", 413)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    return PayloadError(f"body is over the {max_bytes}-byte limit", 413)
                chunks.append(chunk)
    except TimeoutError:
        return PayloadError(f"body not complete after {timeout_seconds:g} s ({size} bytes received)", 408)
    except ClientDisconnect:
        return PayloadError("client disconnected before the body was complete")
    return b"".join(chunks)


class _PayloadPart:
    """Callbacks for python-multipart's parser: keep one part's bytes (Plex's `payload`), drop the others.

    Plex's `thumb` JPEG is never copied. Unlike Starlette's form parser this keeps the bytes as they came,
    so a payload that is not UTF-8 is refused instead of being read as Latin-1, and it notices a body that
    stops before its closing boundary.
    """

    def __init__(self, field: str) -> None:
        self.field = field
        self.payload: bytearray | None = None
        self.complete = False
        self._parts = 0
        self._keeping = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._disposition = b""

    def callbacks(self) -> MultipartCallbacks:
        return cast(
            "MultipartCallbacks", {name: getattr(self, name) for name in dir(self) if name.startswith("on_")}
        )

    def on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_FORM_PARTS:
            raise PayloadError(f"multipart body has more than {MAX_FORM_PARTS} parts")
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        name = parse_options_header(self._disposition)[1].get(b"name")
        if name is None:
            raise PayloadError('a multipart part has no name (Content-Disposition: form-data; name="...")')
        if name == self.field.encode():
            if self.payload is not None:
                raise PayloadError(f"multipart body has more than one `{self.field}` part")
            self.payload = bytearray()
            self._keeping = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._keeping:
            assert self.payload is not None
            self.payload += data[start:end]

    def on_part_end(self) -> None:
        self._keeping = False

    def on_end(self) -> None:
        self.complete = True


def _multipart_payload(body: bytes, options: dict[bytes, bytes], field: str) -> bytes | PayloadError:
    boundary = options.get(b"boundary")
    if not boundary:
        return PayloadError("multipart/form-data without a boundary parameter")
    if not boundary.isascii() or len(boundary) > _MAX_BOUNDARY:
        return PayloadError(f"multipart boundary must be 1 to {_MAX_BOUNDARY} ASCII characters")
    part = _PayloadPart(field)
    try:
        MultipartParser(boundary, part.callbacks()).write(body)
    except PayloadError as error:
        return error
    except MultipartParseError as exc:
        return PayloadError(f"malformed multipart body: {exc}")
    if not part.complete:
        return PayloadError("multipart body ends before its closing boundary (truncated)")
    if part.payload is None:
        return PayloadError(f"multipart body has no `{field}` part")
    return bytes(part.payload)


def _form_fields(body: bytes) -> dict[str, str] | PayloadError:
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=MAX_FORM_PARTS
        )
    except UnicodeDecodeError:
        return PayloadError("form body is not UTF-8 text")
    except ValueError:
        return PayloadError(f"form body has more than {MAX_FORM_PARTS} fields")
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            return PayloadError(f"form field {name[:40]!r} appears twice")
        fields[name] = value
    return fields


def _payload_field(
    source: WebhookSource, content_type: str, options: dict[bytes, bytes], body: bytes
) -> Decoded:
    """A form or multipart body whose `payload_field` holds the JSON (Plex: `payload`, and a `thumb` JPEG)."""
    field = source.payload_field or ""
    if not body.strip():
        return Decoded(None, None)  # the parser answers 400 "empty body"
    if content_type == MULTIPART:
        payload = _multipart_payload(body, options, field)
    else:
        fields = _form_fields(body)
        payload = fields if isinstance(fields, PayloadError) else fields.get(field, "").encode()
    if isinstance(payload, PayloadError):
        return Decoded(None, _raw(body), payload)
    return _json(payload, f"the {field} part")


def _unaccepted(source: WebhookSource, content_type: str, body: bytes) -> Decoded:
    native = source.content_types[0]
    shape = f" with a `{source.payload_field}` part" if native == MULTIPART and source.payload_field else ""
    message = f"{source.service.value} webhooks are {native}{shape}, not {content_type[:60]!r}"
    return Decoded(None, _raw(body), PayloadError(message, 415))


async def decode(
    source: WebhookSource, request: Request, *, max_bytes: int, timeout_seconds: float
) -> Decoded:
    """The body as `source` sends it (`source.content_types`), its JSON parsed strictly."""
    body = await _read_body(request, max_bytes, timeout_seconds)
    if isinstance(body, PayloadError):
        return Decoded(None, None, body)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        message = f"Content-Encoding {encoding[:40]!r} is not accepted: send the body uncompressed"
        return Decoded(None, None, PayloadError(message, 415))
    content_type, options = _content_type(request)
    if source.content_types[0] == JSON and (content_type == "" or content_type.endswith("+json")):
        content_type = JSON  # a JSON sender that leaves the type out, or names a JSON dialect
    if content_type not in source.content_types:
        return _unaccepted(source, content_type, body)
    if content_type == JSON:
        return _json(body)
    if source.payload_field is not None:
        return _payload_field(source, content_type, options, body)
    # Tautulli sends `data=` (form fields) when the user's JSON headers change the Content-Type.
    fields = _form_fields(body)
    if isinstance(fields, PayloadError):
        return Decoded(None, _raw(body), fields)
    return Decoded(fields, fields)
