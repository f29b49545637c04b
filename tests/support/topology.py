"""SmartPlex Sync's services started on this machine exactly as deploy/compose.yaml declares them.

No container engine is reachable here, so this runs what a container would: the image's ENTRYPOINT
(deploy/entrypoint.sh) with the service's `command`, in an environment made of the image's `ENV`
(deploy/Dockerfile), the `.env` variables (`variables`, which compose also hands every container through
`env_file`) and the service's `environment`, interpolated the way compose does. What differs is only
what a container network would give:

- compose's service names (`postgres:5432`, `pgbouncer:6543`, `prefect-server:4200`) become the loopback
  addresses of the real processes the caller started (`addresses`);
- every replica listens on loopback on a port of its own (`ports`: container port → port here), where
  each container would have had its own network namespace;
- the image's /data becomes a directory of its own per replica.

Only services built from our image are started here; PostgreSQL, PgBouncer and the load balancer are the
caller's (tests/support/postgres.py, pgbouncer.py). Everything but the image build is exercised.

    with postgres_cluster() as admin_url:
        init_compose_postgres(admin_url, passwords)            # deploy/postgres/init-databases.sh
        with pgbouncer(admin_url, users=("smartplex",)) as pooled:
            stack = Topology(tmp_path, {**passwords, "SMARTPLEX_WEBHOOK_TOKEN": "t"}, addresses={
                "postgres:5432": f"127.0.0.1:{make_url(admin_url).port}",
                "pgbouncer:6543": f"127.0.0.1:{make_url(pooled).port}",
                "prefect-server:4200": f"127.0.0.1:{prefect_port}",
            })
            stack.start("prefect-server", ports={4200: prefect_port})
            stack.run("migrate"); stack.run("prefect-deploy")
            for replica in (0, 1):
                stack.start("worker", replica, ports={8080: free_port()})
                stack.start("gateway", replica, ports={8000: gateway_ports[replica]})
            ...
            stack.close()
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import make_url

from deployments.processes import VENV_BIN, spawn, stop, wait_until_healthy
from tests.support.postgres import pg_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "deploy" / "compose.yaml"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
ENTRYPOINT = REPO_ROOT / "deploy" / "entrypoint.sh"
POSTGRES_INIT = REPO_ROOT / "deploy" / "postgres" / "init-databases.sh"
IMAGE_DATA_DIR = "/data"
_LOCAL_HOST = "127.0.0.1"
_ALL_INTERFACES = "0.0.0.0"


class MissingVariable(ValueError):
    """A `${NAME:?message}` whose variable is unset: compose refuses to start, and so do we."""


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def our_image(compose: Mapping[str, Any]) -> str:
    """The image every service built from deploy/Dockerfile runs."""
    images = {
        service["image"]
        for service in compose["services"].values()
        if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }
    if len(images) != 1:
        raise ValueError(f"expected one image built from deploy/Dockerfile, found {images}")
    return images.pop()


def our_services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    image = our_image(compose)
    return {name: service for name, service in compose["services"].items() if service.get("image") == image}


def _expand(expression: str, variables: Mapping[str, str]) -> str:
    match = re.fullmatch(r"(\w+)(?:(:-|-|:\?|\?)(.*))?", expression, re.S)
    if not match:
        raise ValueError(f"cannot interpolate ${{{expression}}}")
    name, operator, argument = match.groups()
    value = variables.get(name)
    if operator in (":-", "-"):
        use_default = not value if operator == ":-" else value is None
        return interpolate(argument, variables) if use_default else str(value)
    if operator in (":?", "?") and (not value if operator == ":?" else value is None):
        raise MissingVariable(f"{name}: {interpolate(argument, variables)}")
    return value or ""


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` (nested too), `${NAME-default}` and `${NAME:?error}`."""
    out, index = [], 0
    while (start := value.find("${", index)) != -1:
        out.append(value[index:start])
        depth, end = 1, start + 2
        while depth:
            if end >= len(value):
                raise ValueError(f"unclosed ${{ in {value!r}")
            if value.startswith("${", end):
                depth, end = depth + 1, end + 2
                continue
            depth -= value[end] == "}"
            end += 1
        out.append(_expand(value[start + 2 : end - 1], variables))
        index = end
    out.append(value[index:])
    return "".join(out)


def image_env(dockerfile: Path = DOCKERFILE) -> dict[str, str]:
    """The `ENV KEY=VALUE ...` of the Dockerfile (continuation lines joined)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip().upper().startswith("ENV "):
            for pair in shlex.split(line.strip()[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment`, as a mapping (compose also takes a list of KEY=VALUE)."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def healthcheck_url(service: Mapping[str, Any]) -> str | None:
    """The URL a service's healthcheck fetches, if it fetches one."""
    test = service.get("healthcheck", {}).get("test") or []
    found = re.search(r"https?://[^'\"\s]+", " ".join(map(str, test)))
    return found.group(0) if found else None


def init_compose_postgres(admin_url: str, variables: Mapping[str, str]) -> None:
    """What the compose `postgres` service does on its first start: deploy/postgres/init-databases.sh
    (roles and databases `prefect` and `smartplex`), here against the fresh cluster at `admin_url`."""
    cluster = make_url(admin_url)
    env = {
        **os.environ,
        "PATH": f"{Path(pg_tool('psql')).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PGHOST": cluster.host or _LOCAL_HOST,
        "PGPORT": str(cluster.port),
        "POSTGRES_USER": cluster.username or "postgres",
        "PREFECT_DB_PASSWORD": variables["PREFECT_DB_PASSWORD"],
        "SMARTPLEX_DB_PASSWORD": variables["SMARTPLEX_DB_PASSWORD"],
    }
    subprocess.run(["sh", str(POSTGRES_INIT)], env=env, check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Process:
    """One command as the container would run it: argv and complete environment."""

    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str | None


@dataclass
class Topology:
    """Builds and starts our compose services on loopback; `close()` stops all it started."""

    work_dir: Path
    variables: Mapping[str, str]
    addresses: Mapping[str, str] = field(default_factory=dict)
    compose: dict[str, Any] = field(default_factory=load_compose)
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def _here(self, value: str, ports: Mapping[str, str]) -> str:
        for address, local in self.addresses.items():
            value = re.sub(rf"(?<=[@/]){re.escape(address)}\b", local, value)
        value = value.replace(_ALL_INTERFACES, _LOCAL_HOST)
        return ports.get(value, value)

    def process(self, name: str, replica: int = 0, ports: Mapping[str, str] | None = None) -> Process:
        """The argv and environment of replica `replica` of service `name`, mapped to this machine."""
        ports = {str(k): str(v) for k, v in (ports or {}).items()}
        service = our_services(self.compose)[name]
        data_dir = self.work_dir / f"{name}-{replica}"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SMARTPLEX_", "PREFECT_"))}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        for key, value in image_env().items():
            env[key] = (
                value.replace(IMAGE_DATA_DIR, str(data_dir), 1) if value.startswith(IMAGE_DATA_DIR) else value
            )
        env.update(self.variables)  # env_file: .env
        for key, value in service_environment(service).items():
            env[key] = self._here(interpolate(value, self.variables), ports)
        command = [self._here(interpolate(str(arg), self.variables), ports) for arg in service["command"]]
        url = healthcheck_url(service)
        if url:
            url = re.sub(r":(\d+)/", lambda m: f":{ports.get(m.group(1), m.group(1))}/", url, count=1)
        return Process(f"{name}-{replica}", [str(ENTRYPOINT), *command], env, url)

    def run(self, name: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """A one-shot service (`restart: "no"`), to completion; raises if it fails."""
        process = self.process(name)
        result = subprocess.run(
            process.argv, env=process.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{name} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def start(
        self, name: str, replica: int = 0, ports: Mapping[str, str] | None = None, timeout: float = 180
    ) -> subprocess.Popen[bytes]:
        """A long-running service; returns once its healthcheck answers (if it declares one)."""
        process = self.process(name, replica, ports)
        popen = spawn(process.argv, process.env, self.work_dir / f"{process.name}.log")
        self.started.append((process.name, popen))
        if process.health_url:
            wait_until_healthy(process.health_url, timeout=timeout, process=popen)
        return popen

    def close(self) -> None:
        for _, popen in reversed(self.started):
            stop(popen)
        self.started.clear()
