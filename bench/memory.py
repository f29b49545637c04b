"""Memory and idle CPU of `make run`, process by process, against baselines measured in the same run.

1. The real stack: `smartplex-sync run` in demo mode, on free ports, in a temporary data dir. Once it has
   settled and no flow run is executing, the RSS, PSS and USS of each long-lived process
   (/proc/<pid>/smaps_rollup) and its CPU seconds over a minute. RSS counts shared pages (libpython, the
   C extensions) in every process that maps them; PSS splits them between those processes, so the PSS
   column adds up to what the stack really costs the machine; USS is what each process alone holds.
2. Baselines for the supervisor: a bare interpreter, and an interpreter holding what the supervisor imported
   before it was trimmed (Typer, the settings, SQLAlchemy, the schedule mirror, Prefect's client).
3. The gateway: the memory of its imports, with and without Prefect, and `python -X importtime` self time
   per top-level package.
4. Prefect server settings that could make it lighter on a NAS, each on a server of its own.

`python -m bench memory` prints nothing itself; `make bench` writes the section into docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deployments.processes import (
    VENV_BIN,
    descendants,
    free_port,
    prefect_server_command,
    spawn,
    stop,
    wait_until_healthy,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SETTLE_SECONDS = 60  # after `ready`: the first demo syncs, the scheduler's first loop
CPU_WINDOW = 60
SERVER_SETTLE, SERVER_CPU_WINDOW = 20, 30
GOAL_MB = 450  # issue 9: the idle stack without the demo services

# What the supervisor imported before it was trimmed: `smartplex-sync run` (Typer, settings, SQLAlchemy)
# plus the old deployments/stack.py (Prefect's client, states and filters, the schedule mirror).
OLD_SUPERVISOR_IMPORTS = (
    "deployments.cli",
    "smartplex_sync.schedule_mirror",
    "prefect.client.orchestration",
    "prefect.client.schemas.filters",
    "prefect.states",
)
GATEWAY_WITHOUT_PREFECT = (
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "httpx",
    "pydantic_settings",
    "python_multipart",
)
SERVER_VARIANTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("as `make run` starts it", {}),
    ("UI off (`PREFECT_SERVER_UI_ENABLED=false`)", {"PREFECT_SERVER_UI_ENABLED": "false"}),
    (
        "automations off (`PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED=false`)",
        {"PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false"},
    ),
    (
        "all we could spare off (automations, event persister, foreman, pause expirations, cancellation cleanup)",
        {
            "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
            "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
            "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",
            "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED": "false",
            "PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_ENABLED": "false",
        },
    ),
)


@dataclass(frozen=True)
class Memory:
    rss: float
    pss: float
    uss: float

    def __add__(self, other: Memory) -> Memory:
        return Memory(self.rss + other.rss, self.pss + other.pss, self.uss + other.uss)

    def cells(self) -> str:
        return f"{self.rss:.0f} | {self.pss:.0f} | {self.uss:.0f}"


def memory_of(pid: int) -> Memory:
    """RSS, PSS and USS (private clean + dirty) in MB, from /proc/<pid>/smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            fields[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return Memory(fields["Rss"], fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"])


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_minute(pids: Mapping[str, int], window: float) -> dict[str, float]:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(window)
    return {name: (cpu_seconds(pid) - before[name]) * 60 / window for name, pid in pids.items()}


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s")


# ------------------------------------------------------------------------------------------ the stack


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SMARTPLEX_"))}
    env.update(extra)
    return env


def flow_runs_executing(supervisor: int) -> bool:
    for pid in descendants(supervisor):
        try:
            if b"prefect.engine" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def measure_stack(root: Path) -> tuple[dict[str, Memory], dict[str, float]]:
    data_dir = root / "data"
    env = clean_env(
        {
            "SMARTPLEX_DATA_DIR": str(data_dir),
            "SMARTPLEX_GATEWAY_PORT": str(free_port()),
            "SMARTPLEX_PREFECT_PORT": str(free_port()),
            "PREFECT_HOME": str(root / "prefect-home"),
        }
    )
    with (root / "run.out").open("wb") as out:
        supervisor = subprocess.Popen(
            [str(VENV_BIN / "smartplex-sync"), "run"],
            env=env,
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    state_file = data_dir / "stack.json"

    def ready() -> bool:
        if supervisor.poll() is not None:
            raise RuntimeError(f"make run exited: {(root / 'run.out').read_text()}")
        return json.loads(state_file.read_text())["status"] == "running"

    try:
        wait_for(ready, 400, "make run ready")
        time.sleep(SETTLE_SECONDS)
        wait_for(lambda: not flow_runs_executing(supervisor.pid), 300, "no flow run executing", every=0.5)
        processes = json.loads(state_file.read_text())["processes"]
        pids = {"supervisor": supervisor.pid} | {name: p["pid"] for name, p in processes.items()}
        memory = {name: memory_of(pid) for name, pid in pids.items()}
        cpu = cpu_per_minute(pids, CPU_WINDOW)
        return memory, cpu
    finally:
        supervisor.send_signal(signal.SIGINT)
        try:
            supervisor.wait(180)
        except subprocess.TimeoutExpired:
            stop(supervisor)


# ------------------------------------------------------------------------------------------ imports


def memory_after_imports(modules: Sequence[str]) -> tuple[Memory, int]:
    """A fresh interpreter that imports `modules`: its memory and how many modules it then holds."""
    code = (
        "import importlib, sys\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        "print(len(sys.modules), flush=True)\n"
        "sys.stdin.read()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=clean_env({}),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        count = int(process.stdout.readline())
        return memory_of(process.pid), count
    finally:
        process.communicate(timeout=60)


def import_profile(module: str) -> tuple[dict[str, tuple[float, int]], float]:
    """`python -X importtime -c "import module"`: (self seconds, modules) per top-level package, and the
    total seconds."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=REPO_ROOT,
        env=clean_env({}),
        capture_output=True,
        text=True,
        check=True,
    )
    packages: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        entry = packages[name.split(".")[0]]
        entry[0] += int(own) / 1e6
        entry[1] += 1
    total = sum(seconds for seconds, _ in packages.values())
    return {name: (seconds, int(count)) for name, (seconds, count) in packages.items()}, total


# ------------------------------------------------------------------------------ Prefect server settings


def measure_server(root: Path, extra: Mapping[str, str]) -> tuple[Memory, float]:
    home = root / f"prefect-{len(list(root.glob('prefect-*')))}"
    args, env, api_url = prefect_server_command(home, free_port())
    env = clean_env({k: v for k, v in env.items() if k.startswith("PREFECT_")} | dict(extra))
    server = spawn(args, env, home / "server.log")
    try:
        wait_until_healthy(f"{api_url}/health", timeout=180, process=server)
        time.sleep(SERVER_SETTLE)
        cpu = cpu_per_minute({"server": server.pid}, SERVER_CPU_WINDOW)["server"]
        return memory_of(server.pid), cpu
    finally:
        stop(server)


# ------------------------------------------------------------------------------------------- report

NAMES = {
    "prefect-server": "Prefect server",
    "gateway": "gateway",
    "worker": "worker",
    "supervisor": "supervisor (`smartplex-sync run`)",
    "demo-services": "demo services",
}


def main() -> str:
    with tempfile.TemporaryDirectory(prefix="smartplex-bench-mem-") as tmp:
        root = Path(tmp)
        memory, cpu = measure_stack(root)
        bare, bare_modules = memory_after_imports(())
        old_supervisor, old_modules = memory_after_imports(OLD_SUPERVISOR_IMPORTS)
        lean_supervisor, lean_modules = memory_after_imports(("deployments.stack",))
        without_prefect, without_prefect_modules = memory_after_imports(GATEWAY_WITHOUT_PREFECT)
        prefect_alone, prefect_modules = memory_after_imports(("prefect",))
        client_alone, client_modules = memory_after_imports(("prefect.client.orchestration",))
        gateway_imports, gateway_modules = memory_after_imports(("webhook_gateway.__main__",))
        profile, import_seconds = import_profile("webhook_gateway.__main__")
        servers = [(label, *measure_server(root, extra)) for label, extra in SERVER_VARIANTS]

    core = [name for name in NAMES if name in memory and name != "demo-services"]
    without_demo = sum((memory[name] for name in core), Memory(0, 0, 0))
    whole = without_demo + memory.get("demo-services", Memory(0, 0, 0))
    verdict = "met" if without_demo.pss <= GOAL_MB else "not met"
    rss_verdict = "met" if without_demo.rss <= GOAL_MB else "not met"
    lines = [
        "## Memory: `make run` at idle",
        "",
        f"The real stack (`smartplex-sync run`, demo mode), measured {SETTLE_SECONDS} s after it was ready, at a "
        "moment when no flow run was executing (each run is a `python -m prefect.engine` of about 100 MB for "
        f"its duration). CPU: seconds used over {CPU_WINDOW} s, per minute; the demo driver sends a webhook "
        "every 30 s, so the gateway, worker and server are not entirely idle. PSS shares the pages several "
        "processes map (libpython, C extensions) between them, so PSS adds up to what the stack costs the "
        "machine; RSS counts shared pages in each process.",
        "",
        "| process | RSS MB | PSS MB | USS MB | CPU s/min |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {NAMES[name]} | {memory[name].cells()} | {cpu[name]:.2f} |" for name in core]
    lines += [
        f"| **stack without the demo services** | **{without_demo.cells()}** | "
        f"{sum(cpu[name] for name in core):.2f} |",
        f"| demo services | {memory['demo-services'].cells()} | {cpu['demo-services']:.2f} |",
        f"| whole stack | {whole.cells()} | {sum(cpu.values()):.2f} |",
        "",
        f"Goal (issue 9): the idle stack without the demo services ≤ {GOAL_MB} MB. By PSS, "
        f"{without_demo.pss:.0f} MB: **{verdict}**; by RSS, which counts the shared pages once per process, "
        f"{without_demo.rss:.0f} MB: {rss_verdict}.",
        "",
        "### The supervisor, against what it imported before",
        "",
        "Each row is a fresh interpreter holding only those imports (same run). The supervisor now imports the "
        "standard library and `deployments.processes`; migrations, `prefect deploy`, the schedule restore and "
        "the retry of cut-off runs run in short-lived `python -m deployments.bootstrap` processes.",
        "",
        "| interpreter | RSS MB | PSS MB | USS MB | modules |",
        "|---|---:|---:|---:|---:|",
        f"| bare Python | {bare.cells()} | {bare_modules} |",
        f"| the supervisor's imports before (Typer, settings, SQLAlchemy, schedule mirror, Prefect client) | "
        f"{old_supervisor.cells()} | {old_modules} |",
        f"| the supervisor's imports now (`deployments.stack`) | {lean_supervisor.cells()} | {lean_modules} |",
        f"| the supervisor running, in the stack above | {memory['supervisor'].cells()} | |",
        "",
        f"Now against before: **{old_supervisor.rss / lean_supervisor.rss:.1f}× less RSS** "
        f"({old_supervisor.rss - lean_supervisor.rss:.0f} MB), {old_supervisor.pss / lean_supervisor.pss:.1f}× "
        "less PSS. Before the change the running supervisor measured about 100 MB RSS on this machine (it also "
        "ran Prefect client calls), so the saving in the stack is larger than the imports show.",
        "",
        "### The gateway's imports",
        "",
        "| interpreter | RSS MB | PSS MB | USS MB | modules |",
        "|---|---:|---:|---:|---:|",
        f"| bare Python | {bare.cells()} | {bare_modules} |",
        f"| what the gateway needs besides Prefect ({', '.join(GATEWAY_WITHOUT_PREFECT)}) | "
        f"{without_prefect.cells()} | {without_prefect_modules} |",
        f"| `import prefect` alone | {prefect_alone.cells()} | {prefect_modules} |",
        f"| `import prefect.client.orchestration` alone | {client_alone.cells()} | {client_modules} |",
        f"| the gateway (`webhook_gateway.__main__`) | {gateway_imports.cells()} | {gateway_modules} |",
        "",
        f"`python -X importtime -c 'import webhook_gateway.__main__'`: {import_seconds:.2f} s of imports in all; "
        "the packages with the most self time:",
        "",
        "| package | self time s | share | modules |",
        "|---|---:|---:|---:|",
    ]
    ranked = sorted(profile.items(), key=lambda item: item[1][0], reverse=True)
    lines += [
        f"| {name} | {seconds:.2f} | {seconds / import_seconds:.0%} | {count} |"
        for name, (seconds, count) in ranked[:8]
    ]
    prefect_share = profile.get("prefect", (0.0, 0))
    lines += [
        "",
        f"Prefect's own modules are {prefect_share[1]} of the gateway's {gateway_modules} modules. `import "
        "prefect` loads its whole client, settings, blocks, events and result machinery "
        f"({prefect_alone.rss - bare.rss:.0f} MB above a bare interpreter), and importing only "
        "`prefect.client.orchestration` runs `prefect/__init__.py` first and loads about the same, so a gateway "
        "that imports only Prefect's client would not be much smaller. What would be: creating flow runs over plain httpx against Prefect's REST API "
        f"(`POST /deployments/{{id}}/create_flow_run`), which leaves the {without_prefect.rss:.0f} MB row above "
        "plus our code.",
        "",
        "### Prefect server settings",
        "",
        f"Each on a server of its own (same run), {SERVER_SETTLE} s after it was healthy, CPU over "
        f"{SERVER_CPU_WINDOW} s, no flow runs.",
        "",
        "| settings | RSS MB | PSS MB | USS MB | CPU s/min |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {label} | {mem.cells()} | {cpu_rate:.2f} |" for label, mem, cpu_rate in servers]
    default_rss = servers[0][1].rss
    lightest = min(servers, key=lambda row: row[1].rss)
    lines += [
        "",
        f"The server's memory is its code: the lightest variant saves {default_rss - lightest[1].rss:.0f} MB RSS. "
        '`make run` keeps Prefect\'s defaults (see docs/operations.md, "Memory and small machines").',
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
