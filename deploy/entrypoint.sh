#!/bin/sh
# The entry point of the SmartPlex Sync image (deploy/Dockerfile), and of the systemd units on a bare host.
#   gateway   the webhook gateway (SMARTPLEX_GATEWAY_HOST:SMARTPLEX_GATEWAY_PORT)
#   worker    a Prefect worker of the `smartplex` process pool; extra arguments go to `prefect worker start`
#   migrate   smartplex-sync migrate: add what SMARTPLEX_DATABASE_URL lacks (migrations/*.sql; a no-op when
#             up to date), then write the rows the SMARTPLEX_* settings describe, if any
#   deploy    create the work pool if missing, `prefect deploy --all`, make each sync_schedule row's
#             schedule, and create the automations that mark runs Crashed when their heartbeats stop
#             (python -m deployments.bootstrap prefect, as `make run` does)
#   anything else runs as given, e.g. `prefect server start`
# Settings come from the environment (docs/deploy.md). Flow runs execute from the directory holding
# prefect.yaml, so every command runs there.
set -eu
cd "$(dirname "$0")/.."
PWD="$(pwd)"
export PWD

case "${1:-}" in
gateway)
    shift
    exec python -m webhook_gateway "$@"
    ;;
worker)
    shift
    exec prefect worker start --pool smartplex --type process "$@"
    ;;
migrate)
    shift
    exec smartplex-sync migrate "$@"
    ;;
deploy)
    shift
    exec python -m deployments.bootstrap prefect "$@"
    ;;
*)
    exec "$@"
    ;;
esac
