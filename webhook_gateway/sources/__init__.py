"""The five sources, registered once: each module's parser and its `SOURCE` descriptor.

Parsers are pure functions: no I/O, no database, no clock. Bad input raises `PayloadError` with the 4xx to
answer (see `_common` for which). Each module's docstring holds its event table.
"""

from __future__ import annotations

from typing import Any

from smartplex_sync.models import Source
from smartplex_sync.requests import ParsedDelivery

from . import overseerr, plex, radarr, sonarr, tautulli
from ._source import FORM, JSON, MULTIPART, Form, WebhookSource


def _register(*sources: WebhookSource) -> dict[Source, WebhookSource]:
    registered = {source.service: source for source in sources}
    if len(registered) != len(sources) or set(registered) != set(Source):
        missing = sorted(set(Source) - set(registered))
        raise RuntimeError(f"every Source needs exactly one WebhookSource (missing: {missing})")
    return registered


SOURCES: dict[Source, WebhookSource] = _register(
    plex.SOURCE, tautulli.SOURCE, sonarr.SOURCE, radarr.SOURCE, overseerr.SOURCE
)


def parse(source: Source, payload: Any) -> ParsedDelivery:
    """Parse `payload` as a delivery from `source`: json.loads of the body (of Plex's `payload` part)."""
    return SOURCES[source].parse(payload)


__all__ = ["FORM", "JSON", "MULTIPART", "SOURCES", "Form", "WebhookSource", "parse"]
