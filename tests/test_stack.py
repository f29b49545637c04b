"""`make run`'s and `deploy`'s one-off steps: what they do to the runs a stop, a dead worker or a vanished
machine cut off."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import StateType
from prefect.events.clients import PrefectEventsClient
from prefect.events.schemas.events import Event, RelatedResource, Resource
from prefect.exceptions import ObjectAlreadyExists
from prefect.states import Crashed, Pending, Running, State

from deployments.bootstrap import _retry_interrupted_runs, ensure_lost_run_automations
from smartplex_sync.models import PROJECT_TAG, WEBHOOK_TAG, WORK_POOL, Deployment
from tests.support.prefect_stack import PrefectStack


async def held_queue(client: PrefectClient) -> str:
    """A paused queue of the pool: a run set to run again there stays AwaitingRetry instead of being taken
    by the suite's worker at once (which made these tests fail now and then)."""
    with contextlib.suppress(ObjectAlreadyExists):
        await client.create_work_queue("held-by-tests", is_paused=True, work_pool_name=WORK_POOL)
    return "held-by-tests"


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
                    deployment.id,
                    name=f"cut-off-{state.name}-{len(tags)}",
                    tags=tags,
                    work_queue_name=await held_queue(client),
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
            killed = await client.create_flow_run_from_deployment(
                deployment.id, name="killed-crashed", work_queue_name=await held_queue(client)
            )
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


def test_runs_whose_process_vanished_are_marked_crashed_and_no_others(
    prefect_deployments: PrefectStack,
) -> None:
    """The automations `deploy` creates (Prefect's zombie-run recipe, for runs tagged `smartplex`), on the
    real server, with 10 s instead of 2 and 5 min: a run that sent heartbeats then fell silent, and one
    left Pending, are marked Crashed; a run of another project in the same plight is left alone."""
    api_url = prefect_deployments.api_url
    short = timedelta(seconds=10)

    async def scenario() -> dict[str, tuple[str, str | None]]:
        automations = await ensure_lost_run_automations(api_url, short, short)
        try:
            assert await ensure_lost_run_automations(api_url, short, short) == automations  # updated
            async with PrefectClient(api_url) as client:
                deployment = await client.read_deployment_by_name(Deployment.WEBHOOK_RETENTION.full_name)
                held = await held_queue(client)  # else the suite's worker may run them for real
                silent = await client.create_flow_run_from_deployment(
                    deployment.id, name="went-silent", work_queue_name=held
                )
                stuck = await client.create_flow_run_from_deployment(
                    deployment.id, name="never-started", work_queue_name=held
                )
                assert PROJECT_TAG in silent.tags
                flow_id = await client.create_flow_from_name("not-smartplex")
                theirs = await client._client.post("/flow_runs/", json={"flow_id": str(flow_id), "name": "x"})
                runs = {"silent": silent.id, "stuck": stuck.id, "theirs": UUID(theirs.json()["id"])}
                await client.set_flow_run_state(stuck.id, Pending(), force=True)
                for run_id in (silent.id, runs["theirs"]):
                    await client.set_flow_run_state(run_id, Running(), force=True)
                async with PrefectEventsClient(api_url) as events:
                    for _ in range(3):  # as the flow engine sends them, then nothing more
                        await events.emit(heartbeat(silent.id, deployment.id, silent.tags))
                        await events.emit(heartbeat(runs["theirs"], None, []))
                        await asyncio.sleep(2)
                for _ in range(60):  # bounded: 10 s, then the triggers service's own period
                    states = {name: await client.read_flow_run(run_id) for name, run_id in runs.items()}
                    if all(states[n].state_type is StateType.CRASHED for n in ("silent", "stuck")):
                        break
                    await asyncio.sleep(2)
                for run_id in runs.values():
                    await client.delete_flow_run(run_id)
                return {
                    name: (run.state_type.value, run.state.message if run.state else None)
                    for name, run in states.items()
                }
        finally:
            async with PrefectClient(api_url) as client:  # 10 s would crash other tests' runs
                for automation in automations:
                    await client.delete_automation(automation)

    states = asyncio.run(scenario())
    assert states["silent"] == ("CRASHED", "no heartbeat for 10 s: its process is gone")
    assert states["stuck"] == ("CRASHED", "still pending for 10 s: its process is gone")
    assert states["theirs"][0] == "RUNNING"


def heartbeat(run_id: UUID, deployment_id: UUID | None, tags: list[str]) -> Event:
    """`prefect.flow-run.heartbeat` with the resource and related resources the flow engine gives it."""
    related = [
        RelatedResource({"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"})
        for tag in tags
    ]
    if deployment_id:
        related.append(
            RelatedResource(
                {
                    "prefect.resource.id": f"prefect.deployment.{deployment_id}",
                    "prefect.resource.role": "deployment",
                }
            )
        )
    return Event(
        event="prefect.flow-run.heartbeat",
        resource=Resource(
            {"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.resource.name": "x"}
        ),
        related=related,
    )
