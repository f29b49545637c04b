"""deploy/: compose.yaml, the Dockerfile, the entry point and the systemd units hold together. That the
compose services really run from the commands and environment the file declares, two workers and two
gateways among them, is tests/test_topology.py's part."""

from __future__ import annotations

import configparser
import functools
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from prefect.settings import Settings as PrefectSettings
from prefect.settings.legacy import _get_valid_setting_names
from sqlalchemy.engine import make_url

from deployments.operations import prefect_database_check
from deployments.processes import VENV_BIN
from smartplex_sync.settings import Settings
from tests.support.topology import (
    COMPOSE_FILE,
    DOCKERFILE,
    ENTRYPOINT,
    REPO_ROOT,
    MissingVariable,
    healthcheck_url,
    image_env,
    interpolate,
    load_compose,
    our_services,
    service_environment,
)

DEPLOY = REPO_ROOT / "deploy"
COMPOSE_PASSWORDS = {  # deploy/.env's; the test clusters trust loopback, so their values do not matter
    "POSTGRES_PASSWORD": "compose-postgres",
    "PREFECT_DB_PASSWORD": "compose-prefect",
    "SMARTPLEX_DB_PASSWORD": "compose-smartplex",
}
SYSTEMD = DEPLOY / "systemd"
INSTALL_DIR = "/opt/smartplex-sync"  # where the units expect the checkout (docs/deploy.md)


def entrypoint_commands() -> dict[str, str]:
    """deploy/entrypoint.sh's verbs and the command each one execs."""
    script = ENTRYPOINT.read_text()
    arms = re.findall(r"^(\w[\w-]*)\)\n(.*?);;", script, re.M | re.S)
    return {verb: body.strip().splitlines()[-1].strip().removeprefix("exec ") for verb, body in arms}


@functools.cache
def help_text(*command: str) -> str:
    result = subprocess.run(
        [str(VENV_BIN / command[0]), *command[1:], "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, (command, result.stderr)
    return result.stdout


def assert_real_command(words: list[str]) -> None:
    """`words` run: its subcommands exist and every `--option` appears in their help."""
    if words[:3] == ["python", "-m", "webhook_gateway"]:
        assert (REPO_ROOT / "webhook_gateway" / "__main__.py").exists()
        return
    if words[:3] == ["python", "-m", "deployments.bootstrap"]:
        text_ = help_text("python", "-m", "deployments.bootstrap", *words[3:4])
        assert all(option.split("=")[0] in text_ for option in words[4:] if option.startswith("--"))
        return
    program = [w for w in words if not w.startswith("-") and not w.startswith('"')]
    subcommands = [w for w in program[1:] if re.fullmatch(r"[a-z][a-z-]*", w)]
    for depth in range(len(subcommands), -1, -1):  # the deepest command path that has a help page
        try:
            text_ = help_text(program[0], *subcommands[:depth])
        except AssertionError:
            continue
        break
    for option in (w.split("=")[0] for w in words if w.startswith("--")):
        assert option in text_, (words, option)


def known_variables() -> set[str]:
    ours = set()
    for name, field in Settings.model_fields.items():
        ours.add(f"SMARTPLEX_{name.upper()}")
        if field.validation_alias is not None:
            ours.update(getattr(field.validation_alias, "choices", []))
    return ours | _get_valid_setting_names(PrefectSettings)


def compose_variables() -> set[str]:
    """Names compose interpolates in compose.yaml (`${NAME...}`): set in deploy/.env, not settings."""
    return set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))


# --------------------------------------------------------------------------------------- entry point


def test_the_entrypoint_verbs_run_real_commands() -> None:
    commands = entrypoint_commands()
    assert set(commands) >= {"gateway", "worker", "migrate", "deploy"}
    for command in commands.values():
        assert_real_command(command.replace('"$@"', "").split())
    assert "sync_schedule" in help_text("smartplex-sync", "schedules", "apply")
    assert "--all" in help_text("prefect", "deploy")
    assert "--type" in help_text("prefect", "work-pool", "create")


def test_the_image_holds_every_package_and_the_entrypoint() -> None:
    dockerfile = DOCKERFILE.read_text()
    copied = {Path(src) for src in re.findall(r"^COPY (\S+) ", dockerfile, re.M)}
    copied |= {Path(src) for line in re.findall(r"^COPY (.+) \./$", dockerfile, re.M) for src in line.split()}
    for path in copied:
        assert (REPO_ROOT / path).exists(), path
    packages = {p.parent.name for p in REPO_ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages <= {p.name for p in copied}
    assert {"migrations", "prefect.yaml", "pyproject.toml"} <= {p.name for p in copied}
    assert re.search(r'^ENTRYPOINT \["/app/deploy/entrypoint.sh"\]', dockerfile, re.M)
    assert ENTRYPOINT.stat().st_mode & 0o111
    assert image_env()["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert {k for k in image_env() if k.startswith(("PREFECT_", "SMARTPLEX_"))} <= known_variables()


# ------------------------------------------------------------------------------------------- compose


def test_every_service_of_ours_runs_a_real_command() -> None:
    verbs = entrypoint_commands()
    for name, service in our_services(load_compose()).items():
        command = [str(word) for word in service["command"]]
        if command[0] in verbs:
            base = verbs[command[0]].replace('"$@"', "").split()
            assert_real_command(base + command[1:])
        else:
            assert_real_command(command)
        assert name  # every service of ours has a command (the image's CMD is only a default)


def test_every_variable_is_one_our_settings_or_prefect_know() -> None:
    known = known_variables()
    for name, service in our_services(load_compose()).items():
        unknown = set(service_environment(service)) - known
        assert not unknown, (name, unknown)
    for example in (
        DEPLOY / "env.example",
        SYSTEMD / "smartplex.env.example",
        SYSTEMD / "prefect.env.example",
    ):
        names = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example.read_text(), re.M))
        unknown = names - known - compose_variables()
        assert not unknown, (example.name, unknown)


def test_healthchecks_hit_real_endpoints_on_the_declared_ports(prefect_api_url: str, tmp_path: Path) -> None:
    from webhook_gateway.app import create_app

    services = our_services(load_compose())
    gateway = services["gateway"]
    url = healthcheck_url(gateway)
    assert url is not None
    paths = create_app(Settings(data_dir=tmp_path, _env_file=None), background=False).openapi()["paths"]
    assert httpx.URL(url).path in paths
    assert str(httpx.URL(url).port) == service_environment(gateway)["SMARTPLEX_GATEWAY_PORT"]

    worker = services["worker"]
    url = healthcheck_url(worker)
    assert url is not None and httpx.URL(url).path == "/health"  # prefect/workers/server.py
    assert "--with-healthcheck" in worker["command"]
    assert str(httpx.URL(url).port) == service_environment(worker)["PREFECT_WORKER_WEBSERVER_PORT"]

    server = services["prefect-server"]
    url = httpx.URL(healthcheck_url(server) or "")
    command = server["command"]
    assert str(url.port) == command[command.index("--port") + 1]
    assert httpx.get(f"{prefect_api_url.removesuffix('/api')}{url.path}", timeout=10).is_success


def test_dependencies_name_services_that_can_satisfy_them() -> None:
    services = load_compose()["services"]
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in services, (name, target)
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], (name, target)
            if condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", (name, target)


def test_prefect_never_goes_through_the_pooler_and_our_tables_do() -> None:
    variables = {**COMPOSE_PASSWORDS, "SMARTPLEX_WEBHOOK_TOKEN": "t"}
    services = our_services(load_compose())
    prefect_url = interpolate(
        service_environment(services["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"], variables
    )
    check = prefect_database_check(prefect_url)
    assert check is not None and check.ok, check
    ours = make_url(
        interpolate(service_environment(services["gateway"])["SMARTPLEX_DATABASE_URL"], variables)
    )
    assert (ours.host, ours.port) == ("pgbouncer", 6543)
    pooler = load_compose()["services"]["pgbouncer"]["environment"]
    assert (pooler["POOL_MODE"], pooler["LISTEN_PORT"]) == ("transaction", "6543")
    with pytest.raises(MissingVariable, match="SMARTPLEX_WEBHOOK_TOKEN"):
        interpolate(service_environment(services["gateway"])["SMARTPLEX_WEBHOOK_TOKEN"], {})


def test_interpolation_follows_compose() -> None:
    variables = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET}-${UNSET:-d}-${EMPTY:-e}-${EMPTY-f}", variables) == "x-d-e-"
    assert interpolate("${UNSET:-a${SET}b}", variables) == "axb"
    with pytest.raises(MissingVariable, match="UNSET: say why"):
        interpolate("${UNSET:?say why}", variables)


# ------------------------------------------------------------------------------------------- systemd


def units() -> dict[str, configparser.ConfigParser]:
    found = {}
    for path in sorted(SYSTEMD.glob("*.service")):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(path.read_text())
        found[path.name] = parser
    return found


def test_systemd_units_run_real_commands_in_order() -> None:
    found = units()
    assert {"prefect-server.service", "smartplex-gateway.service", "smartplex-worker@.service"} <= set(found)
    verbs = entrypoint_commands()
    for name, unit in found.items():
        words = unit["Service"]["ExecStart"].split()
        program = Path(words[0].replace(INSTALL_DIR, str(REPO_ROOT)))
        if program == ENTRYPOINT:
            assert words[1] in verbs, name
            assert_real_command(verbs[words[1]].replace('"$@"', "").split() + words[2:])
        else:
            assert program.parent == VENV_BIN and program.exists(), name
            assert_real_command([program.name, *words[1:]])
        for env_file in unit["Service"].get("EnvironmentFile", "").split():
            assert (SYSTEMD / f"{Path(env_file).name}.example").exists(), (name, env_file)
        for key in ("After", "Requires", "Wants"):
            for other in unit["Unit"].get(key, "").split():
                if other.startswith(("smartplex-", "prefect-")):
                    assert other in found, (name, other)
