"""One parser per service: a decoded webhook body in, a `ParsedDelivery` out.

Pure functions: no I/O, no database, no clock. Bad input raises `PayloadError` with the 4xx to answer
(see `_common` for which). Each module's docstring holds its event table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from smartplex_sync.models import Source
from smartplex_sync.requests import ParsedDelivery

from . import overseerr, plex, radarr, sonarr, tautulli

Parser = Callable[[Any], ParsedDelivery]

PARSERS: dict[Source, Parser] = {
    Source.PLEX: plex.parse,
    Source.TAUTULLI: tautulli.parse,
    Source.SONARR: sonarr.parse,
    Source.RADARR: radarr.parse,
    Source.OVERSEERR: overseerr.parse,
}


def parse(source: Source, payload: Any) -> ParsedDelivery:
    """Parse `payload` as a delivery from `source`: json.loads of the body (of Plex's `payload` part)."""
    return PARSERS[source](payload)


__all__ = ["PARSERS", "Parser", "parse"]
