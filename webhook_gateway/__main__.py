"""`python -m webhook_gateway`: serve the gateway on SMARTPLEX_GATEWAY_HOST:SMARTPLEX_GATEWAY_PORT."""

from __future__ import annotations

import logging

import uvicorn

from smartplex_sync.settings import get_settings
from webhook_gateway.app import create_app


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # No uvicorn access log: it would print query strings, where Plex users put their token. The
    # routes log every delivery themselves.
    uvicorn.run(
        create_app(settings), host=settings.gateway_host, port=settings.gateway_port, access_log=False
    )


if __name__ == "__main__":
    main()
