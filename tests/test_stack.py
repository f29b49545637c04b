"""`make run`'s supervisor: what it does to a Prefect server it owns when it starts again."""

from __future__ import annotations

import asyncio

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import StateType
from prefect.states import Pending, Running, State

from deployments.bootstrap import _retry_interrupted_runs
from smartplex_sync.models import Deployment
from tests.support.prefect_stack import PrefectStack


def test_runs_cut_off_by_a_stop_are_run_again(prefect_deployments: PrefectStack) -> None:
    api_url = prefect_deployments.api_url

    async def scenario() -> tuple[list[str], list[str]]:
        async with PrefectClient(api_url) as client:
            deployment = await client.read_deployment_by_name(Deployment.WEBHOOK_RETENTION.full_name)
            runs = []
            for state in (Pending(), Running(), State(type=StateType.CANCELLING, name="Cancelling")):
                run = await client.create_flow_run_from_deployment(
                    deployment.id, name=f"cut-off-{state.name}"
                )
                await client.set_flow_run_state(run.id, state, force=True)
                runs.append(run)
            names = await _retry_interrupted_runs(api_url)
            after = [(await client.read_flow_run(run.id)).state for run in runs]
            for run in runs:
                await client.delete_flow_run(run.id)
            return names, [state.name for state in after]

    names, states = asyncio.run(scenario())
    assert {"cut-off-Pending", "cut-off-Running"} <= set(names)
    assert "cut-off-Cancelling" not in names
    assert states == ["AwaitingRetry", "AwaitingRetry", "Cancelled"]
