-- The per-ping ledger tables partitioned by day (docs/scaling.md, "Partitions, retention
-- and archives"): pings, bid_outcomes and post_attempts become range-partitioned on
-- created_at, one partition per UTC day (<table>_pYYYYMMDD) plus a default partition
-- (<table>_default) that takes any row no day partition covers yet, so a row is never
-- refused for want of a partition. The exchange creates day partitions ahead and drops
-- them past exchange.retention_days (exchange/ledger/retention.py); rows that landed in
-- the default partition move into their day's partition when it is created.
--
-- Keys. A primary key of a partitioned table must hold the partition key, so each gains
-- created_at: pings (ping_id, created_at), bid_outcomes (ping_id, buyer_id, created_at),
-- post_attempts (ping_id, attempt, created_at). Nothing references these tables (no
-- foreign key points at them), and nothing that must be unique across the ledger lives
-- in them: a lead's single sale is sales (ping_id, sale_seq) and the post claim
-- posts (ping_id), both unpartitioned. A row written twice (a retried batch, a replayed
-- dead letter) carries the same created_at, so ON CONFLICT still finds it; and an
-- auction run again under a ping id bound to an external_id is recorded under the time
-- of that id's first claim (external_ids.created_at), so its rows meet the first
-- attempt's keys and whichever reached the ledger first stands, as before.
--
-- The existing rows move: each table is renamed aside, built again partitioned with the
-- same columns, constraints and indexes (its primary key widened), given a partition for
-- every day it holds, and filled from the old table, which is then dropped.

-- The day partition of `p_parent` for `p_day` (UTC), created if missing; true if it was.
-- Built apart and attached, so that creating one does not lock out writers of the parent
-- (ATTACH takes SHARE UPDATE EXCLUSIVE on it); rows of that day waiting in the default
-- partition move in first.
CREATE FUNCTION ledger_day_partition(p_parent text, p_day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    child text := p_parent || '_p' || to_char(p_day, 'YYYYMMDD');
    lo timestamptz := p_day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (p_day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF p_parent NOT IN ('pings', 'bid_outcomes', 'post_attempts') THEN
        RAISE EXCEPTION 'not a day-partitioned ledger table: %', p_parent;
    END IF;
    IF to_regclass(quote_ident(child)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS'
                   ' INCLUDING STORAGE)', child, p_parent);
    -- The range as a constraint before attaching: PostgreSQL then skips scanning the table.
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (created_at >= %L AND created_at < %L)',
                   child, child || '_range', lo, hi);
    EXECUTE format('WITH moved AS (DELETE FROM %I WHERE created_at >= %L AND created_at < %L'
                   ' RETURNING *) INSERT INTO %I SELECT * FROM moved',
                   p_parent || '_default', lo, hi, child);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   p_parent, child, lo, hi);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', child, child || '_range');
    RETURN true;
END;
$$;

-- The day partitions of `p_parent`, by their names.
CREATE FUNCTION ledger_day_partitions(p_parent text)
RETURNS TABLE (day date, partition_name text, partition_oid oid)
LANGUAGE sql STABLE AS $$
    SELECT to_date(substring(c.relname FROM '_p([0-9]{8})$'), 'YYYYMMDD'), c.relname::text, c.oid
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = to_regclass(quote_ident(p_parent))
      AND c.relname ~ ('^' || p_parent || '_p[0-9]{8}$')
    ORDER BY 1
$$;

-- Dropping one day partition (its rows with it); true if there was one.
CREATE FUNCTION ledger_drop_day_partition(p_parent text, p_day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    child text := p_parent || '_p' || to_char(p_day, 'YYYYMMDD');
BEGIN
    IF p_parent NOT IN ('pings', 'bid_outcomes', 'post_attempts') THEN
        RAISE EXCEPTION 'not a day-partitioned ledger table: %', p_parent;
    END IF;
    IF to_regclass(quote_ident(child)) IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TABLE %I', child);
    RETURN true;
END;
$$;

-- Moving one existing table (used by this migration only).
CREATE FUNCTION pg_temp.partition_by_day(p_table text, p_key text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    old text := p_table || '_unpartitioned';
    definitions text[];
    definition text;
    index_name text;
    d date;
BEGIN
    -- Its indexes but the primary key, to build again on the partitioned table.
    SELECT coalesce(array_agg(pg_get_indexdef(i.indexrelid)), '{}') INTO definitions
    FROM pg_index i WHERE i.indrelid = to_regclass(quote_ident(p_table)) AND NOT i.indisprimary;
    EXECUTE format('ALTER TABLE %I RENAME TO %I', p_table, old);
    FOR index_name IN
        SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = to_regclass(quote_ident(old))
    LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', index_name, left(index_name, 40) || '_unpartitioned');
    END LOOP;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS'
                   ' INCLUDING STORAGE) PARTITION BY RANGE (created_at)', p_table, old);
    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (%s)', p_table, p_key);
    FOREACH definition IN ARRAY definitions LOOP
        EXECUTE definition;
    END LOOP;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', p_table || '_default', p_table);
    FOR d IN EXECUTE format('SELECT DISTINCT (created_at AT TIME ZONE ''UTC'')::date FROM %I', old)
    LOOP
        PERFORM ledger_day_partition(p_table, d);
    END LOOP;
    EXECUTE format('INSERT INTO %I SELECT * FROM %I', p_table, old);
    EXECUTE format('DROP TABLE %I', old);
END;
$$;

SELECT pg_temp.partition_by_day('pings', 'ping_id, created_at');
SELECT pg_temp.partition_by_day('bid_outcomes', 'ping_id, buyer_id, created_at');
SELECT pg_temp.partition_by_day('post_attempts', 'ping_id, attempt, created_at');
DROP FUNCTION pg_temp.partition_by_day(text, text);

-- Post claims and external ids cannot be partitioned (each must be unique across the whole
-- ledger: that is what makes a retried post or a repeated external_id safe), so the
-- retention deletes theirs past the same cutoff as their pings'. These serve that.
CREATE INDEX external_ids_created_at_brin ON external_ids USING brin (created_at);

-- Day partitions written out by `lead-exchange archive` (exchange/ledger/archive.py).
-- With exchange.archive_before_drop, the retention drops only a partition recorded here,
-- and only that very partition (its oid): one dropped and made again for late rows is
-- archived again before it goes.
CREATE TABLE ledger_archives (
    table_name    text NOT NULL CHECK (table_name IN ('pings', 'bid_outcomes', 'post_attempts')),
    day           date NOT NULL,
    partition_oid oid NOT NULL,
    file          text NOT NULL,
    rows          bigint NOT NULL CHECK (rows >= 0),
    sha256        text NOT NULL,
    archived_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, day)
);
