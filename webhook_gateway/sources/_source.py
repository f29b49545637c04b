"""`WebhookSource`: everything the gateway knows of one service's webhooks, in one value.

Each source module ends with its `SOURCE`; `webhook_gateway.sources.SOURCES` registers them, and the
gateway reads the token forms, content types, OpenAPI body and parser from there. What the other layers
know of a service (its deployment, its schedule's defaults) is `smartplex_sync.models.SERVICES`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from smartplex_sync.models import Deployment, Source
from smartplex_sync.requests import ParsedDelivery

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"


class Form(StrEnum):
    """A way a sender can carry its token."""

    QUERY = "?token= in the URL"
    BEARER = "Authorization: Bearer <token>"
    HEADER = "X-Webhook-Token: <token>"
    BASIC = "Basic auth password"


@dataclass(frozen=True)
class WebhookSource:
    """One service's webhooks, as the gateway receives them."""

    service: Source
    parse: Callable[[Any], ParsedDelivery]
    """The decoded body (Plex: its `payload` part) → what to sync. Pure; bad input raises PayloadError."""
    token_forms: tuple[Form, ...]
    """How its sender can carry a token (`auth`); the first is the one docs and errors suggest."""
    content_types: tuple[str, ...]
    """What the endpoint reads; anything else is answered 415. The first is what the service sends."""
    feeds: frozenset[Deployment]
    """Every deployment its deliveries can ask for (tests/test_sources.py holds the parser to it)."""
    description: str
    example: dict[str, Any]
    """A delivery as the service sends it, shown in the OpenAPI document."""
    payload_field: str | None = None
    """The form or multipart field that holds the JSON (Plex's `payload`); None: the fields are the body."""

    def request_body(self) -> dict[str, Any]:
        """The OpenAPI `requestBody.content` of its endpoint, with `example` under its native type."""
        content: dict[str, Any] = {}
        for content_type in self.content_types:
            schema: dict[str, Any] = {"type": "object", "additionalProperties": True}
            if content_type != JSON and self.payload_field is not None:
                schema = _payload_field_schema(self.payload_field, with_thumb=content_type == MULTIPART)
            content[content_type] = {"schema": schema}
        native = self.content_types[0]
        in_field = native != JSON and self.payload_field is not None
        example = {self.payload_field: json.dumps(self.example)} if in_field else self.example
        content[native]["example"] = example
        return content


def _payload_field_schema(field: str, *, with_thumb: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {field: {"type": "string", "description": "The event, as JSON text."}}
    if with_thumb:  # Plex attaches the poster to some events
        properties["thumb"] = {"type": "string", "format": "binary", "description": "Read and dropped."}
    return {"type": "object", "properties": properties, "required": [field]}
