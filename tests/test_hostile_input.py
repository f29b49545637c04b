"""Hostile input over real HTTP, on SQLite and PostgreSQL: every bad delivery gets a 4xx and a row.

`CORPUS` is the table: what is sent, the status it must get, and words its error must contain. Each case
then checks that the row is recorded with that error, and that the gateway is still healthy (`/healthz`
200, and a good delivery is accepted right after). `ODDITIES` are odd deliveries that are *not* bad
(a payload sent as a file part, a lone surrogate escape ...): they must be accepted, and stored intact.
"""

from __future__ import annotations

import base64
import gzip
import json
import select
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import Engine, Text, cast
from sqlalchemy import select as sql_select

from simulators.serving import serve_in_thread
from smartplex_sync.migrate import migrate
from smartplex_sync.settings import Settings
from smartplex_sync.store import make_engine
from smartplex_sync.store.tables import webhook_log
from tests.conftest import _fresh_postgres_database
from tests.support.factories import owner_and_server
from webhook_gateway.app import create_app
from webhook_gateway.intake import MAX_FORM_PARTS, MAX_JSON_DEPTH

TOKEN = "corpus-token"
MAX_BODY = 1024 * 1024
BODY_TIMEOUT = 3.0
JSON = {"Content-Type": "application/json"}
GOOD = {"eventType": "Test"}  # a Radarr test event: always 202


@dataclass(frozen=True)
class Gateways:
    open: str  # no token: loopback is trusted
    guarded: str  # SMARTPLEX_WEBHOOK_TOKEN set
    engine: Engine


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gateways(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    """Two gateways (open and guarded) on one fresh database, for the whole module and one backend."""
    if request.param == "postgres":
        url = _fresh_postgres_database(request.getfixturevalue("postgres_admin_url"))
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'smartplex.db'}"
    engine = make_engine(url)
    migrate(engine)
    owner_and_server(engine)  # the one user with a Plex server: deliveries that ask for a sync are theirs
    common = {
        "database_url": url,
        "max_body_bytes": MAX_BODY,
        "body_timeout_seconds": BODY_TIMEOUT,
        "rate_limit_per_second": 0,  # limits have their own tests (test_limits.py)
        "_env_file": None,
    }
    open_app = create_app(Settings(**common), background=False)
    guarded_app = create_app(Settings(**common, webhook_token=TOKEN), background=False)
    with serve_in_thread(open_app) as open_url, serve_in_thread(guarded_app) as guarded_url:
        yield Gateways(open_url, guarded_url, engine)
    engine.dispose()


def row(engine: Engine, row_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return (
            conn.execute(sql_select(webhook_log).where(webhook_log.c.id == uuid.UUID(row_id))).one()._asdict()
        )


# --- How bad input is built and sent ------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


Sender = Callable[[str], Answer]


def post(source: str, body: bytes, headers: dict[str, Any] | None = None, **kwargs: Any) -> Sender:
    def send(base_url: str) -> Answer:
        response = httpx.post(
            f"{base_url}/api/webhooks/{source}", content=body, headers=headers or {}, timeout=60, **kwargs
        )
        assert response.headers["content-type"].startswith("application/json"), response.text
        return Answer(response.status_code, response.json(), dict(response.headers))

    return send


def multipart(*parts: tuple[bytes, bytes], boundary: bytes = b"corpus", end: bool = True) -> bytes:
    """A multipart body from (part headers, part data), with or without its closing boundary."""
    body = b"".join(b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + data + b"\r\n" for head, data in parts)
    return body + (b"--" + boundary + b"--\r\n" if end else b"")


def field_part(name: bytes, data: bytes, filename: bytes | None = None) -> tuple[bytes, bytes]:
    head = b'Content-Disposition: form-data; name="' + name + b'"'
    if filename is not None:
        head += b'; filename="' + filename + b'"\r\nContent-Type: application/octet-stream'
    return head, data


MULTIPART = {"Content-Type": "multipart/form-data; boundary=corpus"}
PLEX_NEW = {"event": "library.new", "Metadata": {"librarySectionID": 1, "ratingKey": "48210"}}


def post_plex(payload: bytes, *extra: tuple[bytes, bytes]) -> Sender:
    return post("plex", multipart(field_part(b"payload", payload), *extra), MULTIPART)


def streamed(source: str, size: int) -> Sender:
    """A body of `size` bytes sent chunked, without Content-Length."""

    def send(base_url: str) -> Answer:
        chunks = (b" " * 65536 for _ in range(size // 65536 + 1))
        response = httpx.post(f"{base_url}/api/webhooks/{source}", content=chunks, headers=JSON, timeout=60)
        return Answer(response.status_code, response.json(), dict(response.headers))

    return send


def slow_body(source: str) -> Sender:
    """Headers, then a body that trickles one byte every 0.2 s and would take hours to complete."""

    def send(base_url: str) -> Answer:
        address = urlsplit(base_url)
        with socket.create_connection((address.hostname, address.port), timeout=60) as conn:
            conn.sendall(
                f"POST /api/webhooks/{source} HTTP/1.1\r\nHost: {address.netloc}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".encode()
            )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if select.select([conn], [], [], 0.2)[0]:
                    break  # the answer has come
                conn.sendall(b" ")
            return _read_http_response(conn)

    return send


def _read_http_response(conn: socket.socket) -> Answer:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536) or b"\r\n\r\n"
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return Answer(int(lines[0].split()[1]), json.loads(body), headers)


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def with_value(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `document` with the field at dotted `path` set to `value`."""
    copy = json.loads(json.dumps(document))
    *parents, last = path.split(".")
    target = copy
    for key in parents:
        target = target.setdefault(key, {})
    target[last] = value
    return copy


@dataclass(frozen=True)
class Bad:
    name: str
    send: Sender
    status: int
    error: str  # words the answer's detail and the row's error_message both contain
    guarded: bool = False  # sent to the gateway that has a token


def bad_json(name: str, source: str, body: bytes | str, status: int, error: str) -> Bad:
    return Bad(name, post(source, body if isinstance(body, bytes) else body.encode(), JSON), status, error)


def gzip_bomb(source: str) -> Sender:
    """64 MiB of zeros in about 64 KiB of gzip, compressed when sent (not at import)."""

    def send(base_url: str) -> Answer:
        body = gzip.compress(b"\0" * (64 * 1024 * 1024))
        return post(source, body, {**JSON, "Content-Encoding": "gzip"})(base_url)

    return send


STRICT_JSON = [
    bad_json("100000 open brackets", "sonarr", "[" * 100_000, 400, "nested deeper than"),
    bad_json("1000 nested arrays", "radarr", nested(1000), 400, "nested deeper than"),
    bad_json(
        "nesting one level over the limit inside a field",
        "radarr",
        '{"eventType": "Test", "extra": ' + nested(MAX_JSON_DEPTH) + "}",
        400,
        f"nested deeper than {MAX_JSON_DEPTH} levels",
    ),
    bad_json("5000 unclosed objects", "overseerr", '{"a":' * 5000, 400, "nested deeper than"),
    Bad(
        "deep nesting in Plex's payload part",
        post_plex(nested(2000).encode()),
        400,
        "payload part is not strict JSON: nested deeper",
    ),
    bad_json(
        "integer of 5000 digits", "overseerr", '{"x": ' + "9" * 5000 + "}", 400, "more than 4300 digits"
    ),
    bad_json(
        "1e400 overflows to infinity", "radarr", '{"eventType": "Test", "x": 1e400}', 400, "out of range"
    ),
    bad_json("-1e400", "sonarr", '{"eventType": "Test", "x": -1e400}', 400, "out of range"),
    bad_json("a bare 1e999 as the body", "tautulli", "1e999", 400, "out of range"),
    bad_json("NaN", "radarr", '{"eventType": "Test", "x": NaN}', 400, "NaN is not a JSON number"),
    bad_json("Infinity", "tautulli", '{"event": "stop", "x": Infinity}', 400, "Infinity is not a JSON"),
    bad_json("-Infinity", "overseerr", '{"x": -Infinity}', 400, "-Infinity is not a JSON"),
    Bad("NaN in Plex's payload part", post_plex(b'{"event": "media.play", "x": NaN}'), 400, "NaN"),
    bad_json("duplicate key", "radarr", '{"eventType": "Test", "eventType": "Download"}', 400, "twice"),
    bad_json(
        "duplicate key in a nested object",
        "sonarr",
        '{"eventType": "Download", "series": {"id": 1, "id": 2}}',
        400,
        "key 'id' appears twice",
    ),
    bad_json("empty body", "sonarr", "", 400, "empty body"),
    bad_json("whitespace only", "radarr", " \r\n\t ", 400, "empty body"),
    bad_json("JSON null", "overseerr", "null", 400, "empty body"),
    bad_json("truncated JSON", "tautulli", '{"event": "stop", "rating_key": "4', 400, "not valid JSON"),
]

ENCODINGS = [
    bad_json("body in Latin-1", "sonarr", '{"eventType": "Téléchargé"}'.encode("latin-1"), 400, "not UTF-8"),
    bad_json("body in UTF-16", "radarr", '{"eventType": "Test"}'.encode("utf-16"), 400, "not UTF-8"),
    bad_json("overlong UTF-8", "overseerr", b'{"notification_type": "\xc0\xaf"}', 400, "not UTF-8"),
    bad_json("UTF-8 encoded surrogate", "tautulli", b'{"event": "\xed\xa0\x80"}', 400, "not UTF-8"),
    Bad(
        "Plex payload part not UTF-8",
        post_plex(b'{"event": "library.new", "Metadata": {"title": "\xe9t\xe9"}}'),
        400,
        "payload part is not UTF-8",
    ),
    Bad(
        "Plex payload file part not UTF-8",
        post("plex", multipart(field_part(b"payload", b'{"event": "\xff"}', b"p.json")), MULTIPART),
        400,
        "payload part is not UTF-8",
    ),
    Bad(
        "Tautulli form field not UTF-8",
        post(
            "tautulli",
            b"event=stop&rating_key=%FF%FE",
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
        400,
        "form body is not UTF-8",
    ),
    Bad(
        "Plex form payload not UTF-8",
        post(
            "plex",
            b"payload=%7B%22event%22%3A%22%FF%22%7D",
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
        400,
        "form body is not UTF-8",
    ),
    Bad(
        "Content-Type with a byte that is not UTF-8",
        post("radarr", b"{}", {"Content-Type": b"application/json\xff"}),
        415,
        "application/json",
    ),
    Bad(
        "multipart boundary that is not ASCII",
        post(
            "plex",
            multipart(field_part(b"payload", b"{}"), boundary=b"b\xffb"),
            {"Content-Type": b"multipart/form-data; boundary=b\xffb"},
        ),
        400,
        "boundary must be",
    ),
    Bad(
        "X-Webhook-Token that is not UTF-8",
        post("sonarr", b'{"eventType": "Test"}', {**JSON, "X-Webhook-Token": b"\xff\xfe"}),
        401,
        "token",
        guarded=True,
    ),
    Bad(
        "Bearer token that is not UTF-8",
        post("overseerr", b"{}", {**JSON, "Authorization": b"Bearer \xc3\x28"}),
        401,
        "token",
        guarded=True,
    ),
    Bad(
        "Basic password that is not UTF-8",
        post(
            "radarr", b"{}", {**JSON, "Authorization": "Basic " + base64.b64encode(b"radarr:\xff").decode()}
        ),
        401,
        "token",
        guarded=True,
    ),
    Bad(
        "query token that is not UTF-8",
        post("plex", multipart(field_part(b"payload", b"{}")), MULTIPART, params={"token": "%FF%FE"}),
        401,
        "token",
        guarded=True,
    ),
]

COMPRESSED = [
    Bad(
        "gzip body",
        post("radarr", gzip.compress(b'{"eventType": "Test"}'), {**JSON, "Content-Encoding": "gzip"}),
        415,
        "Content-Encoding 'gzip'",
    ),
    Bad("gzip bomb", gzip_bomb("sonarr"), 415, "uncompressed"),
    Bad(
        "deflate",
        post("tautulli", b"x\x9c\xab\xae\x05\x00\x01u\x00\xf9", {**JSON, "Content-Encoding": "deflate"}),
        415,
        "deflate",
    ),
    Bad(
        "gzip named in a list",
        post(
            "plex",
            multipart(field_part(b"payload", b"{}")),
            {**MULTIPART, "Content-Encoding": "identity, gzip"},
        ),
        415,
        "Content-Encoding",
    ),
]

MULTIPART_EDGES = [
    Bad(
        "multipart without boundary",
        post("plex", multipart(field_part(b"payload", b"{}")), {"Content-Type": "multipart/form-data"}),
        400,
        "without a boundary",
    ),
    Bad(
        "multipart with another boundary",
        post("plex", multipart(field_part(b"payload", b"{}"), boundary=b"other"), MULTIPART),
        400,
        "malformed multipart body",
    ),
    Bad(
        "multipart cut before its closing boundary",
        post("plex", multipart(field_part(b"payload", json.dumps(PLEX_NEW).encode()), end=False), MULTIPART),
        400,
        "truncated",
    ),
    Bad(
        "multipart cut inside the payload part",
        post("plex", multipart(field_part(b"payload", json.dumps(PLEX_NEW).encode()))[:60], MULTIPART),
        400,
        "truncated",
    ),
    Bad(
        f"{MAX_FORM_PARTS * 4} parts",
        post_plex(b"{}", *(field_part(b"f%d" % i, b"x") for i in range(MAX_FORM_PARTS * 4))),
        400,
        f"more than {MAX_FORM_PARTS} parts",
    ),
    Bad(
        "two payload parts",
        post_plex(json.dumps(PLEX_NEW).encode(), field_part(b"payload", b'{"event": "media.play"}')),
        400,
        "more than one `payload` part",
    ),
    Bad(
        "part without a name",
        post("plex", multipart((b"Content-Type: text/plain", b"{}")), MULTIPART),
        400,
        "has no name",
    ),
    Bad(
        "only a thumb, no payload",
        post("plex", multipart(field_part(b"thumb", b"\xff\xd8\xff\xd9", b"t.jpg")), MULTIPART),
        400,
        "no `payload` part",
    ),
    Bad(
        "thumb over the body limit",
        post_plex(json.dumps(PLEX_NEW).encode(), field_part(b"thumb", b"\xff" * (MAX_BODY + 1), b"t.jpg")),
        413,
        f"{MAX_BODY}-byte limit",
    ),
    Bad(
        "random bytes as multipart",
        post("plex", bytes(range(256)) * 4, MULTIPART),
        400,
        "malformed multipart",
    ),
    Bad(
        "Plex as XML",
        post("plex", b"<event/>", {"Content-Type": "application/xml"}),
        415,
        "multipart/form-data",
    ),
]

TRANSPORT = [
    Bad(
        "Sonarr as a form",
        post("sonarr", b"eventType=Test", {"Content-Type": "application/x-www-form-urlencoded"}),
        415,
        "application/json",
    ),
    Bad(
        "Tautulli form field twice",
        post("tautulli", b"event=stop&event=play", {"Content-Type": "application/x-www-form-urlencoded"}),
        400,
        "'event' appears twice",
    ),
    Bad(
        f"Tautulli form with {MAX_FORM_PARTS + 1} fields",
        post(
            "tautulli",
            "&".join(f"f{i}=x" for i in range(MAX_FORM_PARTS + 1)).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
        400,
        f"more than {MAX_FORM_PARTS} fields",
    ),
    Bad("body over the limit", post("radarr", b" " * (MAX_BODY + 1), JSON), 413, "over the"),
    Bad("chunked body over the limit", streamed("overseerr", MAX_BODY + 1), 413, "over the"),
    Bad(f"body slower than {BODY_TIMEOUT:g} s", slow_body("sonarr"), 408, "not complete after"),
]

TAUTULLI_STOP = {"event": "stop", "rating_key": "48210"}
SONARR_DOWNLOAD = {"eventType": "Download", "series": {"id": 12, "title": "Harbor Lights"}}
RADARR_DOWNLOAD = {"eventType": "Download", "movie": {"id": 87, "title": "Dune"}}
OVERSEERR_AVAILABLE = {
    "notification_type": "MEDIA_AVAILABLE",
    "media": {"media_type": "movie", "tmdbId": "438631"},
    "request": {"request_id": "61"},
}

# Every field a parser reads, with a value it cannot use: (source, document, field, value, error words).
WRONG_TYPES: list[tuple[str, dict[str, Any], str, Any, str]] = [
    ("plex", PLEX_NEW, "event", 7, "event must be a string, got a number"),
    ("plex", PLEX_NEW, "Metadata", ["x"], "Metadata must be an object, got an array"),
    ("plex", PLEX_NEW, "Metadata.librarySectionID", "movies", "librarySectionID must be an integer"),
    ("plex", PLEX_NEW, "Metadata.librarySectionID", 2**63, "librarySectionID is out of range"),
    ("plex", PLEX_NEW, "Metadata.librarySectionType", 1, "librarySectionType must be a string"),
    ("plex", PLEX_NEW, "Metadata.ratingKey", 48210, "ratingKey must be a string"),
    ("plex", PLEX_NEW, "Server", "plex", "Server must be an object"),
    ("plex", PLEX_NEW, "Server.uuid", True, "Server.uuid must be a string, got a boolean"),
    ("tautulli", TAUTULLI_STOP, "event", {"a": 1}, "event must be a string, got an object"),
    ("tautulli", {"rating_key": "48210"}, "action", ["stop"], "action must be a string, got an array"),
    ("tautulli", TAUTULLI_STOP, "rating_key", 1.5, "rating_key must be a string, got a number"),
    ("tautulli", TAUTULLI_STOP, "rating_key", {"id": 1}, "rating_key must be a string, got an object"),
    ("sonarr", SONARR_DOWNLOAD, "eventType", 1, "eventType must be a string"),
    ("sonarr", SONARR_DOWNLOAD, "series", "Harbor Lights", "series must be an object"),
    ("sonarr", SONARR_DOWNLOAD, "series.id", "twelve", "series.id must be an integer"),
    ("sonarr", SONARR_DOWNLOAD, "series.id", 1e300, "series.id is out of range"),
    ("sonarr", SONARR_DOWNLOAD, "series.title", 5, "series.title must be a string"),
    ("sonarr", SONARR_DOWNLOAD, "series.title", "x" * 1001, "series.title is 1001 characters long"),
    ("sonarr", SONARR_DOWNLOAD, "series.tvdbId", "tt1", "series.tvdbId must be an integer"),
    ("sonarr", SONARR_DOWNLOAD, "series.tmdbId", [1], "series.tmdbId must be an integer, got an array"),
    ("sonarr", SONARR_DOWNLOAD, "series.imdbId", 123, "series.imdbId must be a string"),
    ("sonarr", SONARR_DOWNLOAD, "isUpgrade", "yes", "isUpgrade must be true or false"),
    ("radarr", RADARR_DOWNLOAD, "eventType", "D" * 101, "eventType is 101 characters long"),
    ("radarr", RADARR_DOWNLOAD, "movie", [87], "movie must be an object, got an array"),
    ("radarr", RADARR_DOWNLOAD, "movie.id", 87.5, "movie.id must be an integer"),
    ("radarr", RADARR_DOWNLOAD, "movie.id", True, "movie.id must be an integer, got a boolean"),
    ("radarr", RADARR_DOWNLOAD, "movie.title", {"en": "Dune"}, "movie.title must be a string"),
    ("radarr", RADARR_DOWNLOAD, "movie.tmdbId", False, "movie.tmdbId must be an integer"),
    ("radarr", RADARR_DOWNLOAD, "movie.imdbId", 1160419, "movie.imdbId must be a string"),
    ("radarr", RADARR_DOWNLOAD, "isUpgrade", 1, "isUpgrade must be true or false"),
    ("overseerr", OVERSEERR_AVAILABLE, "notification_type", 3, "notification_type must be a string"),
    ("overseerr", OVERSEERR_AVAILABLE, "media", "movie", "media must be an object"),
    ("overseerr", OVERSEERR_AVAILABLE, "media.media_type", 1, "media.media_type must be a string"),
    ("overseerr", OVERSEERR_AVAILABLE, "media.tmdbId", "tmdb-438631", "media.tmdbId must be an integer"),
    ("overseerr", OVERSEERR_AVAILABLE, "media.tvdbId", 1.25, "media.tvdbId must be an integer"),
    ("overseerr", OVERSEERR_AVAILABLE, "media.status", ["AVAILABLE"], "media.status must be a string"),
    ("overseerr", OVERSEERR_AVAILABLE, "request", 61, "request must be an object"),
    (
        "overseerr",
        OVERSEERR_AVAILABLE,
        "request.request_id",
        "9" * 30,
        "request.request_id must be an integer",
    ),
    ("overseerr", OVERSEERR_AVAILABLE, "request.requestedBy_username", {}, "requestedBy_username must be a"),
    ("overseerr", OVERSEERR_AVAILABLE, "request.requestedBy_email", 5, "requestedBy_email must be a string"),
]


def wrong_type(source: str, document: dict[str, Any], path: str, value: Any, error: str) -> Bad:
    payload = json.dumps(with_value(document, path, value)).encode()
    send = post_plex(payload) if source == "plex" else post(source, payload, JSON)
    return Bad(f"{source} {path} = {json.dumps(value)[:20]}", send, 422, error)


NOT_OBJECTS = [
    bad_json(
        "a string instead of an object", "radarr", '"Download"', 422, "expected a JSON object, got a string"
    ),
    Bad("an array in Plex's payload part", post_plex(b"[1, 2]"), 422, "expected a JSON object, got an array"),
]

WRONG_TYPE_CASES = [*(wrong_type(*case) for case in WRONG_TYPES), *NOT_OBJECTS]
CORPUS = [*STRICT_JSON, *ENCODINGS, *COMPRESSED, *MULTIPART_EDGES, *TRANSPORT, *WRONG_TYPE_CASES]


def assert_healthy(base_url: str, guarded: bool) -> None:
    """`/healthz` answers 200 and a good delivery is still accepted."""
    assert httpx.get(f"{base_url}/healthz", timeout=30).json()["status"] == "ok"
    auth = {"Authorization": f"Bearer {TOKEN}"} if guarded else {}
    good = httpx.post(f"{base_url}/api/webhooks/radarr", json=GOOD, headers=auth, timeout=30)
    assert good.status_code == 202, good.text


def test_the_corpus_has_at_least_40_distinct_bad_inputs() -> None:
    names = [case.name for case in CORPUS]
    assert len(names) == len(set(names)) >= 40
    assert all(400 <= case.status < 500 for case in CORPUS)


@pytest.mark.parametrize("case", [c for c in CORPUS if c not in WRONG_TYPE_CASES], ids=lambda case: case.name)
def test_bad_input_gets_a_4xx_and_a_row_with_its_error_and_the_gateway_stays_healthy(
    gateways: Gateways, case: Bad
) -> None:
    assert_rejected_and_recorded(gateways, case)


# Their rows hold ordinary JSON, so one backend is enough.
@pytest.mark.parametrize("gateways", ["sqlite"], indirect=True)
@pytest.mark.parametrize("case", WRONG_TYPE_CASES, ids=lambda case: case.name)
def test_a_field_of_the_wrong_type_gets_a_422_and_a_row_naming_the_field(
    gateways: Gateways, case: Bad
) -> None:
    assert_rejected_and_recorded(gateways, case)


def assert_rejected_and_recorded(gateways: Gateways, case: Bad) -> None:
    base_url = gateways.guarded if case.guarded else gateways.open
    answer = case.send(base_url)
    assert answer.status == case.status, answer.body
    assert case.error.lower() in answer.body["detail"].lower(), answer.body
    recorded = row(gateways.engine, answer.body["id"])
    assert (recorded["action"], recorded["http_status"], recorded["processed"]) == (
        "rejected",
        case.status,
        True,
    )
    assert recorded["event_type"]
    assert case.error.lower() in recorded["error_message"].lower()
    if case.status in (401, 408, 413):  # refused before the body was read: none of it is kept
        assert recorded["payload"] is None
    if case.status == 408:
        assert answer.headers["connection"] == "close"
    if case.status == 415:
        assert answer.headers["accept-encoding"] == "identity"
    assert_healthy(base_url, case.guarded)


@dataclass(frozen=True)
class Odd:
    name: str
    send: Sender
    stored: Any  # the payload webhook_log must hold


ODDITIES = [
    Odd(
        "payload sent as a file part",
        post(
            "plex",
            multipart(field_part(b"payload", json.dumps(PLEX_NEW).encode(), b"payload.json")),
            MULTIPART,
        ),
        PLEX_NEW,
    ),
    Odd(
        "thumb just under the body limit",
        post_plex(json.dumps(PLEX_NEW).encode(), field_part(b"thumb", b"\xff" * (MAX_BODY - 1024), b"t.jpg")),
        PLEX_NEW,
    ),
    Odd(
        "lone surrogate escapes",
        post("radarr", b'{"eventType": "Test", "title": "\\ud800!", "\\udfff": ["\\udbff"]}', JSON),
        {"eventType": "Test", "title": "\ufffd!", "\ufffd": ["\ufffd"]},
    ),
    Odd(
        "integer of 4000 digits in a field nobody reads",
        post("radarr", b'{"eventType": "Test", "size": ' + b"7" * 4000 + b"}", JSON),
        {"eventType": "Test", "size": int("7" * 4000)},
    ),
    Odd(
        "largest and smallest doubles",
        post("radarr", b'{"eventType": "Test", "big": 1.7976931348623157e308, "tiny": 5e-324}', JSON),
        {"eventType": "Test", "big": 1.7976931348623157e308, "tiny": 5e-324},
    ),
    Odd(
        f"nesting of exactly {MAX_JSON_DEPTH} levels",
        post("radarr", ('{"eventType": "Test", "extra": ' + nested(MAX_JSON_DEPTH - 1) + "}").encode(), JSON),
        {"eventType": "Test", "extra": json.loads(nested(MAX_JSON_DEPTH - 1))},
    ),
    Odd(
        "charset parameter that is not UTF-8",
        post("radarr", json.dumps(GOOD).encode(), {"Content-Type": b"application/json; charset=\xff"}),
        GOOD,
    ),
    Odd(
        "a header nobody reads that is not UTF-8",
        post("radarr", json.dumps(GOOD).encode(), {**JSON, "X-Sender": b"\xff"}),
        GOOD,
    ),
    Odd(
        "Content-Encoding identity",
        post("radarr", json.dumps(GOOD).encode(), {**JSON, "Content-Encoding": "identity"}),
        GOOD,
    ),
    Odd(
        "a ratingKey that is a path, not a key",
        post_plex(
            json.dumps({"event": "library.new", "Metadata": {"ratingKey": "1/../../accounts"}}).encode()
        ),
        {"event": "library.new", "Metadata": {"ratingKey": "1/../../accounts"}},
    ),
]


def as_decimals(text: str) -> Any:
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


@pytest.mark.parametrize("odd", ODDITIES, ids=lambda odd: odd.name)
def test_odd_but_harmless_input_is_accepted_and_stored_intact(gateways: Gateways, odd: Odd) -> None:
    answer = odd.send(gateways.open)
    assert answer.status == 202, answer.body
    # Compared as decimal numbers: jsonb keeps 1.7976931348623157e308 as the exact integer it denotes.
    with gateways.engine.connect() as conn:
        text = conn.execute(
            sql_select(cast(webhook_log.c.payload, Text)).where(
                webhook_log.c.id == uuid.UUID(answer.body["id"])
            )
        ).scalar_one()
    assert as_decimals(text) == as_decimals(json.dumps(odd.stored))
    if odd.name.startswith("a ratingKey"):  # never reaches a flow, where it would become part of a URL
        assert (answer.body["action"], answer.body["sync_requests"]) == ("ignored", [])


def test_a_sender_that_hangs_up_mid_body_is_recorded(gateways: Gateways) -> None:
    address = urlsplit(gateways.open)
    with gateways.engine.connect() as conn:
        before = set(conn.execute(sql_select(webhook_log.c.id)).scalars())
    with socket.create_connection((address.hostname, address.port), timeout=30) as conn:
        conn.sendall(
            f"POST /api/webhooks/radarr HTTP/1.1\r\nHost: {address.netloc}\r\n"
            'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"eventType"'.encode()
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with gateways.engine.connect() as conn:
            rows = conn.execute(sql_select(webhook_log).where(webhook_log.c.id.not_in(before))).all()
        if rows:
            break
        time.sleep(0.1)
    [hung_up] = rows
    assert (hung_up.http_status, hung_up.action) == (400, "rejected")
    assert "disconnected" in hung_up.error_message
    assert_healthy(gateways.open, guarded=False)


@pytest.mark.parametrize("target", [b"/api/webhooks/sonarr?x=\xff", b"/api/webhooks/sonarr\xfe"])
def test_a_request_line_that_is_not_http_is_refused_by_the_server_and_harms_nothing(
    gateways: Gateways, target: bytes
) -> None:
    """Raw bytes over 0x7f in the request line are not HTTP: uvicorn answers 400 before any route runs,
    so there is no source to record it under. The gateway goes on."""
    address = urlsplit(gateways.open)
    with socket.create_connection((address.hostname, address.port), timeout=30) as conn:
        conn.sendall(b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        status_line = conn.recv(65536).split(b"\r\n", 1)[0]
    assert status_line.split()[1] == b"400"
    assert_healthy(gateways.open, guarded=False)
