"""Schemathesis against the gateway's own OpenAPI schema, over real HTTP: no request it builds gets a 5xx.

Every operation of the schema (the five webhook endpoints with the bodies they document, replay, the
status endpoints, /healthz) gets a few dozen generated requests, valid and invalid, sent over loopback to
a gateway on a real SQLite database, where one user has one Plex server (so deliveries that ask for a sync
are attributed and queued, not only refused as `unattributed`). Each answer must not be a 5xx, and must be one the schema declares,
with the content type and body shape it declares.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from simulators.serving import serve_in_thread
from smartplex_sync.migrate import migrate
from smartplex_sync.settings import Settings
from smartplex_sync.store import make_engine
from tests.support.factories import owner_and_server
from webhook_gateway.app import create_app

# The schema comes from the app itself (no server or database is touched to build it). Schemathesis's
# lazy `from_fixture` loader does not work with pytest 9, hence a schema known at import time.
OPENAPI = create_app(Settings(database_url="sqlite://", _env_file=None), background=False).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


def test_ids_are_uuids_in_the_schema() -> None:
    """webhook_log ids are SmartPlex's UUIDs: in answers, and in the replay path (a prefix is the CLI's)."""
    [parameter] = OPENAPI["paths"]["/api/webhooks/{webhook_id}/replay"]["post"]["parameters"]
    assert (parameter["in"], parameter["schema"]["format"]) == ("path", "uuid")
    models = OPENAPI["components"]["schemas"]
    assert models["WebhookAccepted"]["properties"]["id"]["format"] == "uuid"
    assert {"type": "string", "format": "uuid"} in models["WebhookError"]["properties"]["id"]["anyOf"]


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('schemathesis') / 'smartplex.db'}"
    engine = make_engine(url)
    migrate(engine)
    owner_and_server(engine)
    engine.dispose()
    gateway_settings = Settings(database_url=url, rate_limit_per_second=0, _env_file=None)
    with serve_in_thread(create_app(gateway_settings, background=False)) as base_url:
        yield base_url


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_built_from_the_schema_gets_a_5xx(case: schemathesis.Case, gateway_url: str) -> None:
    response = case.call(base_url=gateway_url, timeout=30)
    case.validate_response(
        response,
        checks=[
            checks.not_a_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_schema_conformance,
        ],
    )
