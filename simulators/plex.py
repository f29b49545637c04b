"""A Plex Media Server simulator: the HTTP API the library sync uses, served from a `PlexLibrary`.

What it answers, as PMS does:
- `GET /identity` (no token needed, like PMS) and `GET /` (token needed): machineIdentifier, version.
- `GET /library/sections`: `MediaContainer.Directory[]`.
- `GET /library/sections/{id}/all?type=1|2|3|4`: filters `addedAt>>=`, `updatedAt>>=` (strictly after),
  `addedAt<<=`, `updatedAt<<=` (strictly before), epoch seconds; `sort=field[:asc|:desc]`; `includeGuids=1`
  (Guid[] only when asked); paging by `X-Plex-Container-Start`/`-Size` headers or query args, answered
  with `size`, `totalSize` and `offset`. `Metadata` is left out of an empty page, as PMS does.
- `GET /library/metadata/{ratingKey}[,{ratingKey}...]` and `/children`: the known items of the list;
  404 when none is known.

Every path but `/identity` needs `X-Plex-Token` (header or query), else 401. JSON comes back only for
`Accept: application/json`; anything else gets the same container as XML, PMS's default.

Fault injection: `failure_rate` answers that share of requests with 503 (seeded), `latency` delays every
answer, and `SimulatorState.inject()` queues exact faults (a status, or a stall) for the next requests.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response

from simulators.plex_library import SECTION_TYPES, TYPE_NUMBERS, Item, PlexLibrary

_TYPES_BY_NUMBER = {number: name for name, number in TYPE_NUMBERS.items()}
_SORT_FIELDS = {
    "addedAt": lambda i: i.added_at,
    "updatedAt": lambda i: i.updated_at,
    "titleSort": lambda i: i.title.removeprefix("The ").lower(),
    "title": lambda i: i.title.lower(),
    "year": lambda i: i.year or 0,
}
_FILTER_FIELDS = {"addedAt": "added_at", "updatedAt": "updated_at"}


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body


def _tiny_jpeg() -> bytes:
    """A valid baseline JPEG of one grey pixel: all DCT coefficients are zero, so one-code Huffman tables
    (DC category 0, AC end-of-block, each coded as the single bit 0) encode the whole scan in one byte."""
    one_code = bytes([1] + [0] * 15)
    return b"".join(
        (
            b"\xff\xd8",  # SOI
            _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),  # APP0
            _segment(0xDB, b"\x00" + b"\x01" * 64),  # DQT: table 0, all ones
            _segment(0xC0, b"\x08\x00\x01\x00\x01\x01\x01\x11\x00"),  # SOF0: 8 bit, 1x1, one component
            _segment(0xC4, b"\x00" + one_code + b"\x00"),  # DHT DC table 0
            _segment(0xC4, b"\x10" + one_code + b"\x00"),  # DHT AC table 0
            _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"),  # SOS
            b"\x3f",  # bits 0 (DC diff 0) and 0 (EOB), padded with ones
            b"\xff\xd9",  # EOI
        )
    )


# What a Plex webhook's `thumb` part carries, only smaller.
TINY_JPEG = _tiny_jpeg()


@dataclass
class Fault:
    """One injected fault: answer `status`, or (status None) stall `delay` seconds and answer normally."""

    status: int | None = 503
    delay: float = 0.0


@dataclass
class SimulatorState:
    """What tests and benchmarks steer and read: the library, faults, and how many requests came in."""

    library: PlexLibrary
    token: str
    failure_rate: float = 0.0
    latency: float = 0.0
    seed: int = 0
    requests: int = 0
    faults: deque[Fault] = field(default_factory=deque)
    urls: list[str] = field(default_factory=list)  # as requested, query string included

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.lock = threading.Lock()

    def inject(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def reset_counter(self) -> None:
        self.requests = 0
        self.urls.clear()


def _xml(container: dict[str, Any]) -> bytes:
    """The container as PMS's XML: scalars become attributes, lists of objects child elements."""

    def build(tag: str, data: dict[str, Any]) -> ElementTree.Element:
        element = ElementTree.Element("Video" if tag == "Metadata" else tag)
        for key, value in data.items():
            if isinstance(value, list):
                for child in value:
                    element.append(build(key, child))
            elif value is not None:
                element.set(key, str(int(value) if isinstance(value, bool) else value))
        return element

    return ElementTree.tostring(build("MediaContainer", container), xml_declaration=True, encoding="utf-8")


def _answer(request: Request, container: dict[str, Any]) -> Response:
    if "application/json" in request.headers.get("accept", ""):
        body = json.dumps({"MediaContainer": container}, separators=(",", ":"))
        return Response(body, media_type="application/json")
    return Response(_xml(container), media_type="application/xml")


def _paging(request: Request) -> tuple[int, int | None]:
    def read(name: str) -> str | None:
        return request.headers.get(name) or request.query_params.get(name)

    start, size = read("X-Plex-Container-Start"), read("X-Plex-Container-Size")
    return int(start or 0), (int(size) if size is not None else None)


def _filtered(items: list[Item], request: Request) -> list[Item]:
    """Apply `field>>=value` / `field<<=value` (the `>>`/`<<` is part of the query key)."""
    for key, value in request.query_params.items():
        for op in (">>", "<<"):
            name = key.removesuffix(op)
            if key.endswith(op) and name in _FILTER_FIELDS:
                attr, bound = _FILTER_FIELDS[name], int(value)
                if op == ">>":
                    items = [i for i in items if getattr(i, attr) > bound]
                else:
                    items = [i for i in items if getattr(i, attr) < bound]
    return items


def _sorted(items: list[Item], sort: str | None) -> list[Item]:
    name, _, direction = (sort or "titleSort").partition(":")
    key = _SORT_FIELDS.get(name, _SORT_FIELDS["titleSort"])
    return sorted(items, key=lambda i: (key(i), i.rating_key), reverse=direction == "desc")


def create_plex_app(
    library: PlexLibrary, *, token: str, failure_rate: float = 0.0, latency: float = 0.0, seed: int = 0
) -> FastAPI:
    """The simulator app; `app.state.plex` is its `SimulatorState`."""
    state = SimulatorState(library, token, failure_rate, latency, seed)
    app = FastAPI(title="Plex Media Server simulator")
    app.state.plex = state

    @app.middleware("http")
    async def gatekeeper(request: Request, call_next: Any) -> Response:
        with state.lock:
            state.requests += 1
            state.urls.append(str(request.url))
            fault = state.faults.popleft() if state.faults else None
            random_failure = state.failure_rate > 0 and state.rng.random() < state.failure_rate
        delay = state.latency + (fault.delay if fault else 0.0)
        if delay:
            await asyncio.sleep(delay)
        if fault and fault.status is not None:
            return Response(f"injected {fault.status}", status_code=fault.status)
        if random_failure:
            return Response("Service Unavailable", status_code=503)
        presented = request.headers.get("X-Plex-Token") or request.query_params.get("X-Plex-Token")
        if request.url.path != "/identity" and presented != state.token:
            return Response("<html><head><title>Unauthorized</title></head></html>", status_code=401)
        return await call_next(request)

    def server_container() -> dict[str, Any]:
        return {
            "size": 0,
            "machineIdentifier": state.library.machine_identifier,
            "version": state.library.version,
            "friendlyName": state.library.friendly_name,
            "claimed": True,
        }

    @app.get("/identity")
    async def identity(request: Request) -> Response:
        container = server_container()
        del container["friendlyName"]
        return _answer(request, container)

    @app.get("/")
    async def root(request: Request) -> Response:
        return _answer(request, server_container())

    @app.get("/library/sections")
    async def sections(request: Request) -> Response:
        directories = [state.library.section_json(s) for s in state.library.sections.values()]
        return _answer(
            request,
            {
                "size": len(directories),
                "allowSync": False,
                "title1": "Plex Library",
                "Directory": directories,
            },
        )

    @app.get("/library/sections/{section_id}/all")
    async def section_all(request: Request, section_id: int) -> Response:
        section = state.library.sections.get(section_id)
        if section is None:
            return Response("Not Found", status_code=404)
        type_param = request.query_params.get("type")
        type_name = _TYPES_BY_NUMBER.get(int(type_param)) if type_param else SECTION_TYPES[section.type][0]
        if type_name not in SECTION_TYPES[section.type]:
            return Response("Bad Request", status_code=400)
        items = _sorted(
            _filtered(state.library.section_items(section_id, type_name), request),
            request.query_params.get("sort"),
        )
        start, size = _paging(request)
        page = items[start:] if size is None else items[start : start + size]
        include_guids = request.query_params.get("includeGuids") == "1"
        container: dict[str, Any] = {
            "size": len(page),
            "totalSize": len(items),
            "offset": start,
            "allowSync": True,
            "identifier": "com.plexapp.plugins.library",
            "librarySectionID": section.key,
            "librarySectionTitle": section.title,
            "librarySectionUUID": section.uuid,
            "viewGroup": type_name,
        }
        if page:
            container["Metadata"] = [
                state.library.to_json(i, include_guids=include_guids, include_section=False) for i in page
            ]
        return _answer(request, container)

    def metadata_container(items: list[Item]) -> dict[str, Any]:
        container: dict[str, Any] = {"size": len(items), "identifier": "com.plexapp.plugins.library"}
        if items:
            container["Metadata"] = [
                state.library.to_json(i, include_guids=True, include_section=True) for i in items
            ]
        return container

    @app.get("/library/metadata/{rating_keys}")
    async def metadata(request: Request, rating_keys: str) -> Response:
        """One item, or several (`/library/metadata/1,2,3`): the known ones, 404 when none is known."""
        items = []
        for key in rating_keys.split(","):
            item = state.library.items.get(int(key)) if key.strip().isdigit() else None
            if item is not None and state.library.sections[item.section_id].mounted:
                items.append(item)
        if not items:
            return Response("Not Found", status_code=404)
        return _answer(request, metadata_container(items))

    @app.get("/library/metadata/{rating_key}/children")
    async def children(request: Request, rating_key: int) -> Response:
        item = state.library.items.get(rating_key)
        if item is None or not state.library.sections[item.section_id].mounted:
            return Response("Not Found", status_code=404)
        return _answer(request, metadata_container(state.library.children(rating_key)))

    return app


def library_new_payload(library: PlexLibrary, item: Item) -> dict[str, Any]:
    """The JSON a PMS posts (as the `payload` part) when `item` arrives in its library."""
    section = library.sections[item.section_id]
    metadata = library.to_json(item, include_guids=True, include_section=True)
    metadata["librarySectionType"] = section.type
    return {
        "event": "library.new",
        "user": True,
        "owner": True,
        "Account": {"id": 1, "thumb": "https://plex.tv/users/0000/avatar", "title": "owner"},
        "Server": {"title": library.friendly_name, "uuid": library.machine_identifier},
        "Metadata": metadata,
    }


def send_library_new(
    gateway_url: str, item: Item, token: str | None = None, *, library: PlexLibrary
) -> httpx.Response:
    """POST what a real PMS posts on `library.new`: multipart/form-data, a `payload` JSON part and a
    `thumb` JPEG part. Plex can send no headers of its own, so a token travels as `?token=`."""
    params = {"token": token} if token else None
    return httpx.post(
        gateway_url,
        params=params,
        data={"payload": json.dumps(library_new_payload(library, item))},
        files={"thumb": ("thumb.jpg", TINY_JPEG, "image/jpeg")},
        headers={"User-Agent": "PlexMediaServer/1.41.3.9314-a0bfb8370"},
        timeout=10.0,
    )
