"""prefect.yaml and the code agree: names, entrypoints, work pool, limits and the seed guide's schedules."""

from __future__ import annotations

import importlib
import uuid
from pathlib import Path

import yaml

from smartplex_sync.models import SERVICE_OF, SERVICES, WORK_POOL, Deployment
from smartplex_sync.requests import PARAMETERS
from smartplex_sync.schedule_mirror import schedule_parameters

REPO = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((REPO / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in CONFIG["deployments"]}


def test_one_deployment_per_name_the_code_uses() -> None:
    assert set(DEPLOYMENTS) == {d.value for d in Deployment}


def test_entrypoints_are_the_flows_the_gateway_names() -> None:
    for deployment in Deployment:
        path, function = DEPLOYMENTS[deployment.value]["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert getattr(module, function).name == deployment.flow_name


def test_every_deployment_has_a_pool_a_limit_and_a_collision_strategy() -> None:
    for name, deployment in DEPLOYMENTS.items():
        assert deployment["work_pool"]["name"] == WORK_POOL, name
        assert deployment["concurrency_limit"]["limit"] == 1, name
        assert deployment["concurrency_limit"]["collision_strategy"] in ("ENQUEUE", "CANCEL_NEW"), name


def test_sync_deployments_declare_no_schedule_and_retention_runs_daily() -> None:
    """Each sync_schedule row becomes a schedule of its own (the mirror's); a `schedules:` key here would
    make every `prefect deploy` replace them. Retention is ours alone: daily."""
    for deployment in SERVICE_OF:
        assert "schedules" not in DEPLOYMENTS[deployment.value], deployment
    [retention] = DEPLOYMENTS["webhook-retention"]["schedules"]
    assert (retention["interval"], retention["active"]) == (24 * 3600, True)


def test_the_default_schedules_are_the_seed_guides() -> None:
    defaults = {s.source.value: (s.scheduled_by_default, s.default_interval_hours) for s in SERVICES.values()}
    assert defaults == {
        "plex": (True, 12),
        "tautulli": (True, 6),
        "sonarr": (False, 24),
        "radarr": (False, 24),
        "overseerr": (False, 6),
    }


def test_a_schedules_parameters_are_what_its_flow_accepts() -> None:
    server = uuid.uuid4()
    for deployment, service in SERVICE_OF.items():
        path, function = DEPLOYMENTS[deployment.value]["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), function)
        validated = flow.validate_parameters(schedule_parameters(service.value, [server]))
        assert validated["trigger"] == "scheduled"
        assert list(validated["request"].servers) == [server]


def test_default_parameters_are_what_their_flow_accepts() -> None:
    """Prefect validates a run's parameters against the flow's signature, the typed request included."""
    for deployment in Deployment:
        path, function = DEPLOYMENTS[deployment.value]["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), function)
        parameters = DEPLOYMENTS[deployment.value].get("parameters") or {}
        validated = flow.validate_parameters(parameters)
        if deployment in PARAMETERS:
            assert isinstance(validated.get("request", PARAMETERS[deployment]()), PARAMETERS[deployment])
