-- Live buyer and seller settings (SPEC section 11, docs/operations.md): one row per
-- version, the first written from the YAML (action 'bootstrap'), each later one a change
-- made over the operator API or by the exchange itself (auto-pause). A row holds the
-- whole document in force from that version on (what every process loads: the newest
-- row wins) and the changed entry's before and after, secrets masked (what
-- GET /v1/changes shows). Versions are assigned by the writer as the one it read plus
-- one: the primary key refuses a second change made against the same version, and that
-- writer merges its change again onto the newer document.
CREATE TABLE settings_versions (
    version    bigint PRIMARY KEY CHECK (version > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    action     text NOT NULL CHECK (action IN
                   ('bootstrap', 'create', 'update', 'auto_pause', 'auto_resume')),
    section    text CHECK (section IN ('buyers', 'sellers')),
    target_id  text,
    reason     text,
    before     jsonb,
    after      jsonb,
    document   jsonb NOT NULL
);

-- GET /v1/changes?section=&id=: one entry's history, newest first.
CREATE INDEX settings_versions_target ON settings_versions (section, target_id, version DESC);
