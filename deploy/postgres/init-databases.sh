#!/bin/sh
# First start of the compose `postgres` service: one database for Prefect, one for our tables, each with
# its own owner. Run once by the postgres image (/docker-entrypoint-initdb.d), as its superuser.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v prefect_password="$PREFECT_DB_PASSWORD" -v smartplex_password="$SMARTPLEX_DB_PASSWORD" <<'SQL'
CREATE ROLE prefect LOGIN PASSWORD :'prefect_password';
CREATE DATABASE prefect OWNER prefect;
CREATE ROLE smartplex LOGIN PASSWORD :'smartplex_password';
CREATE DATABASE smartplex OWNER smartplex;
SQL
