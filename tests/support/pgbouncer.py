"""A real PgBouncer in transaction mode (Debian's `pgbouncer`) in front of a test PostgreSQL, on loopback.

This is what Supabase's transaction pooler on port 6543 is to a client: every transaction may run on a
different server connection, so server-side prepared statements, `SET`, `LISTEN/NOTIFY` and advisory
locks do not survive from one transaction to the next. With `tls`, clients must connect with TLS
(`sslmode=require`), and PgBouncer talks TLS to PostgreSQL too.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

from deployments.processes import free_port, spawn, stop
from tests.support.tls import self_signed_cert

# Few server connections: consecutive transactions of one client really do land on different ones.
POOL_SIZE = 5


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if Path(p).exists()), None
    )
    if not found:
        raise RuntimeError("pgbouncer not found: install it (apt-get install pgbouncer, or make test)")
    return found


def _config(server_host: str, server_port: int, port: int, root: Path, tls: bool) -> str:
    lines = [
        "[databases]",
        f"* = host={server_host} port={server_port}",  # any database name, passed through
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "unix_socket_dir =",
        "auth_type = trust",
        f"auth_file = {root / 'users.txt'}",
        "pool_mode = transaction",
        f"default_pool_size = {POOL_SIZE}",
        "max_client_conn = 500",
        f"logfile = {root / 'pgbouncer.log'}",
    ]
    if tls:
        cert, key = self_signed_cert(root)
        lines += [
            "client_tls_sslmode = require",
            f"client_tls_cert_file = {cert}",
            f"client_tls_key_file = {key}",
            "server_tls_sslmode = require",
        ]
    return "\n".join(lines) + "\n"


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"pgbouncer not listening on {port} after {timeout:.0f}s")


@contextmanager
def pgbouncer(server_url: str, *, tls: bool = False, users: Sequence[str] = ("postgres",)) -> Iterator[str]:
    """Start PgBouncer (pool_mode = transaction) in front of the PostgreSQL of `server_url`; yield the same
    URL pointing at PgBouncer instead. PgBouncer refuses to run as root, so as root it runs as `postgres`."""
    server = make_url(server_url)
    root = Path(tempfile.mkdtemp(prefix="smartplex-pgbouncer-"))
    port = free_port()
    (root / "users.txt").write_text("".join(f'"{user}" ""\n' for user in users))
    config = root / "pgbouncer.ini"
    config.write_text(_config(server.host or "127.0.0.1", server.port or 5432, port, root, tls))
    args = [pgbouncer_binary(), str(config)]
    if os.geteuid() == 0:
        root.chmod(0o755)
        for path in (root, *root.iterdir()):
            shutil.chown(path, "postgres")
        args = ["runuser", "-u", "postgres", "--", *args]
    process = spawn(args, dict(os.environ), root / "stdout.log")
    try:
        _wait_for_port(port, process, root / "stdout.log")
        yield server.set(port=port).render_as_string(hide_password=False)
    finally:
        stop(process)
        shutil.rmtree(root, ignore_errors=True)
