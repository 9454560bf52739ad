#!/bin/sh
# Run once by the postgres image when it creates the database (docker-entrypoint-initdb.d):
# the login role Grafana reads the ledger with. It owns nothing and reads no table; the
# exchange's migrations grant it only the report functions (0024_ledger_reader.sql).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v password="${LEDGER_READER_PASSWORD:-reader}" <<'SQL'
CREATE ROLE ledger_reader LOGIN PASSWORD :'password' CONNECTION LIMIT 4;
ALTER ROLE ledger_reader SET statement_timeout = '10s';
SQL
