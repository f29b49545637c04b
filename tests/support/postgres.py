"""A throwaway PostgreSQL cluster from the machine's own binaries (initdb / pg_ctl), on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deployments.processes import free_port
from tests.support.tls import self_signed_cert

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def pg_tool(name: str) -> str:
    for directory in PG_BIN_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install PostgreSQL (apt-get install postgresql)")
    return found


def _as_cluster_owner(args: list[str]) -> list[str]:
    # initdb and pg_ctl refuse to run as root, and CI runs as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


# With TLS the cluster is like Supabase's: TCP clients must use TLS (sslmode=require), others are refused.
_TLS_ONLY_HBA = """\
local     all  all                trust
hostssl   all  all  127.0.0.1/32  trust
hostnossl all  all  127.0.0.1/32  reject
"""


@contextmanager
def postgres_cluster(tls: bool = False) -> Iterator[str]:
    """Start a cluster in a temp dir; yield its admin URL (database `postgres`); stop and remove it.

    `tls`: ssl=on with a self-signed certificate, and TCP connections without TLS refused."""
    root = Path(tempfile.mkdtemp(prefix="smartplex-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        root.chmod(0o755)
    port = free_port()
    subprocess.run(
        _as_cluster_owner(
            [pg_tool("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"]
        ),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    if tls:
        cert, key = self_signed_cert(root)
        (data / "pg_hba.conf").write_text(_TLS_ONLY_HBA)
        if os.geteuid() == 0:
            for path in (cert, key, data / "pg_hba.conf"):
                shutil.chown(path, "postgres")
        options += f" -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}"
    subprocess.run(
        _as_cluster_owner(
            [pg_tool("pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "pg.log"), "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_cluster_owner([pg_tool("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)
