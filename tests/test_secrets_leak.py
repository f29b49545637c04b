"""No secret anywhere it could be read: a realistic run (every sender with its own token, wrong doors tried,
a bad body, dispatch to Prefect, syncs run by a worker against the simulated services with their keys,
status, replay by endpoint and by CLI) and then every log and output it produced is searched for every
secret: the gateway's and the worker's logs (INFO, as in production), every *.log the suite wrote (Prefect
server, other workers), every row of every table, the status endpoints, the CLI's output, and Prefect's
flow runs (names, parameters, tags, states), task runs, logs, artifacts and deployments."""

from __future__ import annotations

import base64
import json
import logging
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from deployments.cli import app as cli_app
from deployments.processes import VENV_BIN, free_port, spawn, stop, wait_until_healthy
from simulators import demo, overseerr, plex, radarr, sonarr, tautulli
from simulators._arr import send_arr_webhook
from simulators.demo import DemoWorld, history_item
from simulators.plex_library import MOVIE, SHOW
from smartplex_sync.settings import get_settings
from smartplex_sync.store import accounts, get_engine, make_engine, queue
from smartplex_sync.store.tables import metadata, webhook_log
from tests.support.prefect_stack import PrefectStack, start_worker
from tests.test_end_to_end import dispatched_row, finished_runs, served_by, wait_for

FIXTURES = Path(__file__).parent / "fixtures"
OUR_TOKENS = {
    "SMARTPLEX_WEBHOOK_TOKEN": "shared-Vq3u-Kx81",
    "SMARTPLEX_PLEX_WEBHOOK_TOKEN": "plexdoor-Jm40-Tz27",
    "SMARTPLEX_TAUTULLI_WEBHOOK_TOKEN": "tautullidoor-Pw62-Rb05",
    "SMARTPLEX_SONARR_WEBHOOK_TOKEN": "sonarrdoor-Hc19-Ln88",
    "SMARTPLEX_RADARR_WEBHOOK_TOKEN": "radarrdoor-Ge73-Sd41",
    "SMARTPLEX_OVERSEERR_WEBHOOK_TOKEN": "overseerrdoor-Yf56-Ua90",
    "SMARTPLEX_ADMIN_TOKEN": "admindoor-Qn24-Wv63",
}
SERVICE_KEYS = [demo.PLEX_TOKEN, demo.TAUTULLI_KEY, demo.SONARR_KEY, demo.RADARR_KEY, demo.OVERSEERR_KEY]
USER_SECRETS = [demo.ALICE_SECRET, demo.BOB_SECRET]  # users.webhook_secret: the demo driver's tokens
SECRETS = [*OUR_TOKENS.values(), *SERVICE_KEYS, *USER_SECRETS]
# Where SmartPlex itself keeps credentials (its settings pages write them): the one place they belong.
CREDENTIAL_COLUMNS = {("servers", "plex_token"), ("integrations", "api_key"), ("users", "webhook_secret")}
ADMIN = {"Authorization": f"Bearer {OUR_TOKENS['SMARTPLEX_ADMIN_TOKEN']}"}


@dataclass
class Gateway:
    url: str
    env: dict[str, str]
    log: Path


@pytest.fixture(scope="module")
def gateway(
    prefect_deployments: PrefectStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, PrefectStack]]:
    """`python -m webhook_gateway` (as `make run` starts it) with a token per door, and a worker at Prefect's
    default log level (INFO), both writing their logs where the search below looks. (The session's worker,
    if another module started it, takes some of the runs: its log is searched too.)"""
    home = tmp_path_factory.mktemp("secrets-leak")
    port = free_port()
    env = {
        **prefect_deployments.env,
        **OUR_TOKENS,
        "PREFECT_LOGGING_LEVEL": "INFO",
        "SMARTPLEX_GATEWAY_PORT": str(port),
        "SMARTPLEX_DATA_DIR": str(home),
        "SMARTPLEX_PLEX_SCAN_GRACE_SECONDS": "3",
        "SMARTPLEX_DISPATCH_POLL_SECONDS": "1",
    }
    worker = start_worker(
        PrefectStack(prefect_deployments.api_url, env, prefect_deployments.database_url), home / "worker.log"
    )
    process: subprocess.Popen[bytes] | None = None
    try:
        process = spawn(
            [str(VENV_BIN / "python"), "-m", "webhook_gateway"], env, home / "gateway.log", cwd=home
        )
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(f"{url}/healthz", timeout=60, process=process)
        yield Gateway(url, env, home / "gateway.log"), prefect_deployments
    finally:
        if process is not None:
            stop(process)
        stop(worker)


@pytest.fixture
def demo_driver(gateway: tuple[Gateway, PrefectStack]) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`make run`'s demo services and driver: the driver posts Plex's webhooks with `?token=`, as Plex does."""
    gw, _ = gateway
    log = gw.log.parent / "demo-services.log"
    driver = spawn([str(VENV_BIN / "python"), "-m", "simulators.demo"], gw.env, log, cwd=gw.log.parent)
    try:
        yield driver, log
    finally:
        stop(driver)


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"smartplex:{password}".encode()).decode()


def deliver_everything(url: str, world: DemoWorld) -> dict[str, httpx.Response]:
    """Each sender with its own token in its own form, as the simulators send them."""
    library = world.library
    section = next(s for s in library.sections.values() if s.type == MOVIE)
    with world.lock:
        movie = library.add_movie(section.key, at=int(time.time()))
        play = world.history.add_play(
            history_item(library, movie), started=int(time.time()) - 3600, percent_complete=95
        )
    show = next(i for i in library.items.values() if i.type == SHOW)
    series = next(s for s in world.series if s["title"] == show.title)
    request = overseerr.generate_requests(1, seed=11)[0]
    hook = f"{url}/api/webhooks"
    return {
        "plex": plex.send_library_new(
            f"{hook}/plex", movie, OUR_TOKENS["SMARTPLEX_PLEX_WEBHOOK_TOKEN"], library=library
        ),
        "tautulli": tautulli.send_webhook(
            f"{hook}/tautulli",
            play,
            server_machine_id=library.machine_identifier,
            headers={"Authorization": f"Bearer {OUR_TOKENS['SMARTPLEX_TAUTULLI_WEBHOOK_TOKEN']}"},
        ),
        "sonarr": sonarr.send_download(
            f"{hook}/sonarr",
            series,
            username="smartplex",
            password=OUR_TOKENS["SMARTPLEX_SONARR_WEBHOOK_TOKEN"],
        ),
        "radarr": send_arr_webhook(  # its Test button; Radarr's key is used by the full sync below
            f"{hook}/radarr",
            json.loads((FIXTURES / "radarr" / "test.json").read_text()),
            user_agent=f"Radarr/{radarr.RADARR_VERSION} (ubuntu 22.04)",
            headers={"X-Webhook-Token": OUR_TOKENS["SMARTPLEX_RADARR_WEBHOOK_TOKEN"]},
        ),
        "overseerr": overseerr.send_notification(
            f"{hook}/overseerr",
            "MEDIA_APPROVED",
            request,
            authorization=f"Bearer {OUR_TOKENS['SMARTPLEX_OVERSEERR_WEBHOOK_TOKEN']}",
        ),
    }


def knock_on_wrong_doors(url: str) -> list[int]:
    """Tokens at the wrong endpoint, in the wrong form, and on the admin endpoints; a bad body."""
    hook = f"{url}/api/webhooks"
    plex_token, sonarr_token = (
        OUR_TOKENS["SMARTPLEX_PLEX_WEBHOOK_TOKEN"],
        OUR_TOKENS["SMARTPLEX_SONARR_WEBHOOK_TOKEN"],
    )
    answers = [
        httpx.post(f"{hook}/sonarr", params={"token": plex_token}, json={"eventType": "Test"}),
        httpx.post(
            f"{hook}/sonarr", headers={"Authorization": basic(plex_token)}, json={"eventType": "Test"}
        ),
        httpx.post(f"{hook}/plex", params={"token": sonarr_token}, files={"payload": (None, "{}")}),
        httpx.post(f"{hook}/radarr", params={"token": OUR_TOKENS["SMARTPLEX_RADARR_WEBHOOK_TOKEN"]}, json={}),
        httpx.post(f"{hook}/tautulli", headers=ADMIN, json={"event": "test"}),
        httpx.get(f"{url}/api/webhooks/status", params={"token": plex_token}),
        httpx.get(
            f"{url}/api/sync/status",
            headers={"Authorization": f"Bearer {OUR_TOKENS['SMARTPLEX_WEBHOOK_TOKEN']}"},
        ),
        httpx.post(
            f"{hook}/radarr",
            headers={
                "X-Webhook-Token": OUR_TOKENS["SMARTPLEX_RADARR_WEBHOOK_TOKEN"],
                "Content-Type": "application/json",
            },
            content=b'{"eventType": "Download", "movie": ',  # cut short
        ),
    ]
    return [answer.status_code for answer in answers]


def prefect_state(api_url: str) -> str:
    """Everything Prefect keeps that a person can read: runs, task runs, logs, artifacts, deployments."""
    dumps = []
    with httpx.Client(base_url=api_url, timeout=30) as client:
        for kind in ("flow_runs", "task_runs", "logs", "artifacts", "deployments"):
            for page in range(200):  # bounded: 40 000 records per kind at most
                batch = client.post(f"/{kind}/filter", json={"limit": 200, "offset": page * 200}).json()
                dumps.append(json.dumps(batch))
                if len(batch) < 200:
                    break
    return "\n".join(dumps)


def database_dump(database_url: str) -> str:
    """Every row of every table, but SmartPlex's own credential columns."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return "\n".join(
                repr(row)
                for table in metadata.sorted_tables
                for row in conn.execute(
                    select(*(c for c in table.columns if (table.name, c.name) not in CREDENTIAL_COLUMNS))
                ).all()
            )
    finally:
        engine.dispose()


def settled(engine: Engine) -> bool:
    """No request waits for a batch, and no batch waits for its run to end."""
    return not queue.pending_requests(engine) and not queue.open_batches(engine)


def leaks(where: str, text: str) -> list[str]:
    return [f"{secret!r} in {where}" for secret in SECRETS if secret in text]


@pytest.mark.timeout(900)  # real runs on a shared machine: bounded, but not by the default 300 s
def test_no_secret_reaches_a_log_a_row_an_output_or_prefect(
    gateway: tuple[Gateway, PrefectStack],
    demo_driver: tuple[subprocess.Popen[bytes], Path],
    demo_services: tuple[DemoWorld, str],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    gw, stack = gateway
    world, _ = demo_services
    driver, demo_log = demo_driver
    answers = deliver_everything(gw.url, world)
    assert {source: a.status_code for source, a in answers.items()} == dict.fromkeys(answers, 202)
    assert knock_on_wrong_doors(gw.url) == [401, 401, 401, 401, 401, 401, 401, 400]

    engine = make_engine(stack.database_url)
    rows = [dispatched_row(engine, a.json()["id"]) for a in answers.values() if a.json()["sync_requests"]]
    run_ids = {run for row in rows for run in served_by(engine, row["id"])}

    outputs: dict[str, str] = {}
    replay = httpx.post(f"{gw.url}/api/webhooks/{answers['tautulli'].json()['id']}/replay", headers=ADMIN)
    assert replay.status_code == 202, replay.text
    outputs["replay endpoint"] = replay.text
    outputs["healthz"] = httpx.get(f"{gw.url}/healthz").text

    # The CLI, as an operator on the gateway's machine runs it (same environment, same .env).
    for name, value in gw.env.items():
        if name.startswith(("SMARTPLEX_", "PREFECT_")):
            monkeypatch.setenv(name, value)
    monkeypatch.chdir(gw.log.parent)
    get_settings.cache_clear()
    get_engine.cache_clear()
    runner = CliRunner()
    with engine.connect() as conn:  # the settings' server (the driver's Bob is served only while it runs)
        owner = accounts.user_id_by_email(conn, get_settings().owner_email)
    assert owner is not None
    our_server = str(accounts.env_server_id(owner))
    try:
        for service in (
            "radarr",
            "overseerr",
        ):  # full syncs: the flows call Radarr and Overseerr with their keys
            started = runner.invoke(cli_app, ["sync", service, "--server", our_server])
            assert started.exit_code == 0, started.output
            outputs[f"cli sync {service}"] = started.output
            run_ids.add(started.output.split("flow run ")[1].split()[0])
        by_cli = runner.invoke(cli_app, ["webhooks", "replay", str(answers["plex"].json()["id"])])
        assert by_cli.exit_code == 0, by_cli.output
        outputs["cli replay"] = by_cli.output
        # The driver posts as Alice (no server of hers here: a 422) and, 20 s in, as Bob (his rows it wrote).
        wait_for(
            lambda: "Bob's Plex: library.new" in demo_log.read_text() or driver.poll() is not None,
            120,
            "the demo driver's delivery for Bob",
        )
        assert re.search(r"Bob's Plex: library\.new .* → gateway 202", demo_log.read_text())

        # Everything the test asked for dispatched and run to the end (and nothing left open for the next
        # module): the CLI's replay too, which the running gateway picked up from the database. The driver
        # serves Bob's Plex until then: his deliveries may share a run with ours.
        wait_for(lambda: settled(engine), 600, "every request dispatched and every run finished")
        stop(driver)
        replayed = dispatched_row(engine, by_cli.output.split("→ webhook ")[1].split(":")[0])
        run_ids.update(served_by(engine, replayed["id"]))
        for deployment, run in finished_runs(sorted(run_ids)).values():
            assert run.state.is_completed(), (deployment, run.state.message)

        outputs["cli ls"] = runner.invoke(cli_app, ["webhooks", "ls", "--limit", "500"]).output
        with engine.connect() as conn:
            ids = conn.execute(select(webhook_log.c.id)).scalars().all()
        outputs["cli show"] = "\n".join(
            runner.invoke(cli_app, ["webhooks", "show", str(i)]).output for i in ids
        )
    finally:
        get_settings.cache_clear()
        get_engine.cache_clear()
    outputs["webhook status"] = httpx.get(f"{gw.url}/api/webhooks/status?limit=200", headers=ADMIN).text
    outputs["sync status"] = httpx.get(f"{gw.url}/api/sync/status", headers=ADMIN).text

    found: list[str] = []
    for name, text in outputs.items():
        found += leaks(name, text)
    found += leaks("the database", database_dump(stack.database_url))
    found += leaks("Prefect's API", prefect_state(stack.api_url))
    logs = sorted(tmp_path_factory.getbasetemp().rglob("*.log"))
    assert {gw.log, gw.log.parent / "worker.log", demo_log} <= set(logs)
    for path in logs:
        found += leaks(str(path), path.read_text(errors="replace"))
    # In-process log records, except the test's own senders' request lines (httpx logs the URL it posts
    # to; Plex's own log does the same with its `?token=`): they are the senders' logs, not ours.
    ours = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    found += leaks("log records", "\n".join(f"{r.name} {r.getMessage()}" for r in ours))
    assert "refused (401)" in gw.log.read_text()  # the search did read the gateway's own lines
    assert not found, found
