-- Delayed delivery (SPEC section 10, exchange/auction/holds.py): a lead unsold at post
-- time only because buyers with `delayed` were off schedule is held here, its PII sealed
-- (AES-256-GCM, exchange/core/sealing.py), until the first of them opens.
--
-- The post of a held lead is `queued` (no walk runs: nothing closes it as interrupted);
-- its hold's delivery makes it sold, or unsold with reason hold_expired.
ALTER TABLE posts DROP CONSTRAINT posts_status_check;
ALTER TABLE posts ADD CONSTRAINT posts_status_check
    CHECK (status IN ('in_progress', 'sold', 'unsold', 'queued'));

CREATE TABLE held_leads (
    ping_id          uuid PRIMARY KEY,
    seller_id        text NOT NULL,
    vertical         text NOT NULL,
    sub_id           text,                     -- the seller's traffic source, if any
    -- held: waiting or being delivered; sold; expired (its window ended unsold).
    state            text NOT NULL CHECK (state IN ('held', 'sold', 'expired')),
    lead             jsonb NOT NULL,           -- the non-PII fields, as the ping had them
    pii_key_id       text,                     -- both NULL once the hold is over (purged)
    pii              bytea,
    -- The buyers it is held for, each until its own hold_hours from the lead's arrival:
    -- [{"buyer": id, "until": ISO time}], in the order they are offered the lead.
    buyers           jsonb NOT NULL,
    tried            text[] NOT NULL DEFAULT '{}',   -- buyers offered it (or dropped) already
    min_payout_cents bigint NOT NULL DEFAULT 0 CHECK (min_payout_cents >= 0),
    phone_hash       bytea,                    -- keyed contact hashes (duplicate checks)
    email_hash       bytea,
    -- post_attempts numbering: the post's walk made first_attempt - 1 attempts.
    first_attempt    integer NOT NULL CHECK (first_attempt >= 1),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    held_at          timestamptz NOT NULL,
    hold_until       timestamptz NOT NULL,
    next_check_at    timestamptz NOT NULL,
    -- The delivery claim: one process at a time, until its lease ends (exactly-once
    -- release across processes; a process that dies mid-delivery loses it at lease end).
    claimed_by       text,
    claim_token      uuid,
    lease_until      timestamptz,
    buyer_id         text,                     -- who bought it (state sold)
    finished_at      timestamptz,
    CHECK ((pii IS NULL) = (pii_key_id IS NULL)),
    CHECK (state = 'held' OR pii IS NULL)
);
CREATE INDEX held_leads_due ON held_leads (next_check_at) WHERE state = 'held';
