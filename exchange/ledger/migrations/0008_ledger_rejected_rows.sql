-- Dead letters of the batch writer (exchange/batch.py): ledger rows PostgreSQL refused
-- (a NUL in a text, a number out of range, a broken constraint) or that could not be
-- encoded, set aside so one bad row never stops the others. Nothing is lost: ``row_data``
-- holds the row as the batch sent it (a JSON array in the column order of
-- exchange.batch.COLUMNS), or its Python repr when it had no JSON form, as bytes because
-- it may hold the very characters text and jsonb refuse. docs/reliability.md says how to
-- inspect, replay and discard them.
CREATE TABLE ledger_rejected_rows (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name text NOT NULL CHECK (table_name IN ('pings', 'bid_outcomes', 'post_attempts')),
    ping_id    uuid,            -- the row's ping, when its first column is one
    sqlstate   text,            -- NULL: the row could not be encoded
    error      text NOT NULL,
    row_data   bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_rejected_rows_created_at ON ledger_rejected_rows (created_at);
