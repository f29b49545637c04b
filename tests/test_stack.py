"""`make run`'s one-off steps: what they do to the runs a stop or a dead worker cut off."""

from __future__ import annotations

import asyncio

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import StateType
from prefect.states import Crashed, Pending, Running, State

from deployments.bootstrap import _retry_interrupted_runs
from smartplex_sync.models import WEBHOOK_TAG, Deployment
from tests.support.prefect_stack import PrefectStack


def test_runs_cut_off_by_a_stop_are_run_again(prefect_deployments: PrefectStack) -> None:
    """A scheduled or manual run is retried; a run of the gateway's dispatcher stays crashed (the dispatcher
    queues its deliveries again); a run being cancelled is cancelled."""
    api_url = prefect_deployments.api_url

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        async with PrefectClient(api_url) as client:
            deployment = await client.read_deployment_by_name(Deployment.WEBHOOK_RETENTION.full_name)
            runs = []
            for state, tags in (
                (Pending(), []),
                (Running(), []),
                (Running(), [WEBHOOK_TAG]),
                (State(type=StateType.CANCELLING, name="Cancelling"), []),
            ):
                run = await client.create_flow_run_from_deployment(
                    deployment.id, name=f"cut-off-{state.name}-{len(tags)}", tags=tags
                )
                await client.set_flow_run_state(run.id, state, force=True)
                runs.append(run)
            done = await _retry_interrupted_runs(api_url)
            after = [(await client.read_flow_run(run.id)).state for run in runs]
            for run in runs:
                await client.delete_flow_run(run.id)
            return done.retried, done.crashed, [state.name for state in after]

    retried, crashed, states = asyncio.run(scenario())
    assert {"cut-off-Pending-0", "cut-off-Running-0"} <= set(retried)
    assert "cut-off-Running-1" in crashed
    assert not {"cut-off-Running-1", "cut-off-Cancelling-0"} & set(retried)
    assert states == ["AwaitingRetry", "AwaitingRetry", "Crashed", "Cancelled"]


def test_a_run_killed_with_its_worker_is_retried_even_if_it_reported_its_crash(
    prefect_deployments: PrefectStack,
) -> None:
    """Without the sweep (an external Prefect server), only the runs the stack killed are touched."""
    api_url = prefect_deployments.api_url

    async def scenario() -> tuple[list[str], list[str]]:
        async with PrefectClient(api_url) as client:
            deployment = await client.read_deployment_by_name(Deployment.WEBHOOK_RETENTION.full_name)
            killed = await client.create_flow_run_from_deployment(deployment.id, name="killed-crashed")
            await client.set_flow_run_state(killed.id, Running(), force=True)
            await client.set_flow_run_state(killed.id, Crashed(), force=True)
            elsewhere = await client.create_flow_run_from_deployment(deployment.id, name="another-workers")
            await client.set_flow_run_state(elsewhere.id, Running(), force=True)
            done = await _retry_interrupted_runs(api_url, sweep=False, cut_off=[killed.id])
            after = [(await client.read_flow_run(run.id)).state.name for run in (killed, elsewhere)]
            for run in (killed, elsewhere):
                await client.delete_flow_run(run.id)
            return done.retried, after

    retried, states = asyncio.run(scenario())
    assert retried == ["killed-crashed"]
    assert states == ["AwaitingRetry", "Running"]
