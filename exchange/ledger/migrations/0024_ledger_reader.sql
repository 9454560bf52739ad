-- Grafana's read of the ledger (config/grafana/provisioning/datasources/ledger.yml): the
-- role ledger_reader may call the report functions and nothing else. Each function is
-- SECURITY DEFINER, so the role needs no right on any table. The role is made by whoever
-- runs the database (config/postgres/ledger-reader.sh for docker-compose), not here: the
-- exchange's own database user need not be allowed to create roles. Without it, nothing
-- is granted; made later, grant it by hand:
--   GRANT EXECUTE ON FUNCTION seller_sub_id_report(timestamptz, timestamptz) TO ledger_reader;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_reader') THEN
        GRANT EXECUTE ON FUNCTION seller_sub_id_report(timestamptz, timestamptz)
            TO ledger_reader;
    END IF;
END
$$;
