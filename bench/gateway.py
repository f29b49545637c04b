"""Gateway benchmark: acknowledging a delivery, against a baseline measured in the same run.

Sonarr Download deliveries posted one after another over keep-alive HTTP to the real gateway (parse +
durable SQLite commit before the 202), against the same server answering 202 without recording (the cost
of HTTP alone). Also 8 concurrent senders. What happens after the answer, end to end, is measured in
`bench.burst` and `bench.latency`.

`python -m bench.gateway` prints the section; `make bench` writes it into docs/benchmarks.md.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from simulators import sonarr
from simulators.serving import serve_in_thread
from smartplex_sync.migrate import migrate
from smartplex_sync.settings import Settings
from smartplex_sync.store import make_engine
from webhook_gateway.app import create_app

SEQUENTIAL, CONCURRENT, SENDERS = 400, 400, 8


def _baseline_app() -> FastAPI:
    app = FastAPI()

    @app.post("/api/webhooks/sonarr")
    async def accept() -> JSONResponse:
        return JSONResponse({"id": 0}, status_code=202)

    return app


def _latencies(url: str, body: bytes, count: int) -> list[float]:
    headers = {"Content-Type": "application/json"}
    with httpx.Client() as client:
        for _ in range(20):  # warm-up
            client.post(url, content=body, headers=headers)
        timings = []
        for _ in range(count):
            started = time.perf_counter()
            response = client.post(url, content=body, headers=headers)
            timings.append(time.perf_counter() - started)
            assert response.status_code == 202, response.text
    return timings


def _throughput(url: str, body: bytes, count: int, senders: int) -> float:
    def send(n: int) -> None:
        with httpx.Client() as client:
            for _ in range(n):
                assert (
                    client.post(url, content=body, headers={"Content-Type": "application/json"}).status_code
                    == 202
                )

    started = time.perf_counter()
    with ThreadPoolExecutor(senders) as pool:
        list(pool.map(send, [count // senders] * senders))
    return count / (time.perf_counter() - started)


def _ms(values: list[float], quantile: float) -> float:
    return statistics.quantiles(values, n=100)[int(quantile * 100) - 1] * 1000


def measure_ack(root: Path) -> dict[str, Any]:
    body = httpx.Request("POST", "/", json=sonarr.download_payload(sonarr.generate_series(1)[0])).content
    # 800 deliveries from one source in seconds is a flood the rate limit would refuse: this measures the ack.
    # The gateway attributes each delivery to a SmartPlex server: one Plex server and a Sonarr for it, as the
    # settings make them at start-up (never reached: `background=False` records without dispatching).
    settings = Settings(
        database_url=f"sqlite:///{root / 'ack.db'}",
        rate_limit_per_second=0,
        plex_url="http://127.0.0.1:9/plex",
        plex_token="bench-token",
        sonarr_url="http://127.0.0.1:9/sonarr",
        sonarr_api_key="bench-key",
        _env_file=None,
    )
    migrate(make_engine(settings.sqlalchemy_url))
    with serve_in_thread(_baseline_app()) as base_url:
        baseline = _latencies(f"{base_url}/api/webhooks/sonarr", body, SEQUENTIAL)
        baseline_rate = _throughput(f"{base_url}/api/webhooks/sonarr", body, CONCURRENT, SENDERS)
    with serve_in_thread(create_app(settings, background=False)) as gateway_url:
        gateway = _latencies(f"{gateway_url}/api/webhooks/sonarr", body, SEQUENTIAL)
        gateway_rate = _throughput(f"{gateway_url}/api/webhooks/sonarr", body, CONCURRENT, SENDERS)
    return {
        "baseline": baseline,
        "gateway": gateway,
        "baseline_rate": baseline_rate,
        "gateway_rate": gateway_rate,
    }


def main() -> str:
    with tempfile.TemporaryDirectory(prefix="smartplex-bench-gw-") as tmp:
        root = Path(tmp)
        ack = measure_ack(root)
    base50, gw50 = _ms(ack["baseline"], 0.5), _ms(ack["gateway"], 0.5)
    base99, gw99 = _ms(ack["baseline"], 0.99), _ms(ack["gateway"], 0.99)
    lines = [
        "## Gateway: acknowledging a delivery",
        "",
        f"{SEQUENTIAL} Sonarr `Download` deliveries, one after another over keep-alive HTTP, then {CONCURRENT} from "
        f"{SENDERS} concurrent senders. Baseline: the same uvicorn server answering 202 without parsing or "
        "recording. The gateway identifies the sender, attributes the delivery to its SmartPlex user and Plex server, "
        "parses the payload and commits the `webhook_log` row and its queued sync (SQLite, WAL) before it answers.",
        "",
        "| | baseline (HTTP only) | gateway (parse + durable commit) | ratio |",
        "|---|---:|---:|---:|",
        f"| p50 latency | {base50:.2f} ms | {gw50:.2f} ms | {gw50 / base50:.1f}× |",
        f"| p99 latency | {base99:.2f} ms | {gw99:.2f} ms | {gw99 / base99:.1f}× |",
        f"| throughput, {SENDERS} senders | {ack['baseline_rate']:.0f} /s | {ack['gateway_rate']:.0f} /s | "
        f"{ack['baseline_rate'] / ack['gateway_rate']:.1f}× slower |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
