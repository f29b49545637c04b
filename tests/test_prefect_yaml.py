"""prefect.yaml and the code agree: names, entrypoints, work pool, limits and the seed guide's schedules."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from smartplex_sync.models import WORK_POOL, Deployment
from smartplex_sync.requests import PARAMETERS

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


def test_schedules_are_the_seed_guides() -> None:
    schedules = {
        name: (d["schedules"][0]["interval"], d["schedules"][0]["active"]) for name, d in DEPLOYMENTS.items()
    }
    assert schedules == {
        "plex-library-sync": (12 * 3600, True),
        "tautulli-sync": (6 * 3600, True),
        "sonarr-sync": (24 * 3600, False),
        "radarr-sync": (24 * 3600, False),
        "overseerr-sync": (6 * 3600, False),
        "webhook-retention": (24 * 3600, True),
    }


def test_default_parameters_are_what_their_flow_accepts() -> None:
    """Prefect validates a run's parameters against the flow's signature, the typed request included."""
    for deployment in Deployment:
        path, function = DEPLOYMENTS[deployment.value]["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), function)
        parameters = DEPLOYMENTS[deployment.value].get("parameters") or {}
        validated = flow.validate_parameters(parameters)
        if deployment in PARAMETERS:
            assert isinstance(validated.get("request", PARAMETERS[deployment]()), PARAMETERS[deployment])
