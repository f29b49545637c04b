"""Serve an ASGI app with uvicorn on a loopback port, in a background thread (tests, demo mode, benchmarks)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


@contextmanager
def serve_in_thread(app: Any, port: int | None = None) -> Iterator[str]:
    """Run `app` on 127.0.0.1 (`port`, or one the OS picks) until the block exits; yield its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port or 0, log_level="warning", lifespan="on", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port or 'any'}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]  # port 0: the one the OS picked
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        server.should_exit = True
        thread.join(10)
