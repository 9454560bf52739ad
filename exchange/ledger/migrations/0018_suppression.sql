-- Suppression lists (SPEC section 10, exchange/ledger/suppression.py): phones and emails an
-- operator loaded, kept only as keyed hashes (HMAC-SHA256 under
-- exchange.suppression_hash_key: exchange/core/suppression.py). A list is one row here,
-- with its entry count kept in step by every load (so listing the lists never counts
-- millions of rows) and the id of the key its hashes were made under.
CREATE TABLE IF NOT EXISTS suppression_lists (
    name       text PRIMARY KEY,
    entries    bigint NOT NULL DEFAULT 0 CHECK (entries >= 0),
    key_id     bytea NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

-- One row per entry. The primary key serves the post-time look-up (a vertical's lists and
-- a lead's two or three hashes: one index probe each), a load's inserts and a list's
-- deletion.
CREATE TABLE IF NOT EXISTS suppression_entries (
    list_name text NOT NULL,
    hash      bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (list_name, hash)
);

-- A post refused for a suppressed lead (reason 'suppressed') names the list that matched:
-- the list's name only, never the value.
ALTER TABLE posts ADD COLUMN IF NOT EXISTS suppressed_by text;
