-- Caps, tier rotation, duplicate checks, returns, and report indexes.

-- Accepted sales per buyer per cap window (period start is a UTC instant computed in the
-- buyer's time zone). Reserved atomically before a post, released when the buyer declines.
CREATE TABLE cap_counters (
    buyer_id     text NOT NULL,
    period       text NOT NULL CHECK (period IN ('hour', 'day', 'week', 'month')),
    period_start timestamptz NOT NULL,
    sales        integer NOT NULL DEFAULT 0 CHECK (sales >= 0),
    spent_cents  bigint NOT NULL DEFAULT 0 CHECK (spent_cents >= 0),
    PRIMARY KEY (buyer_id, period, period_start)
);

-- The last winner of each round-robin tier, shared by every exchange process.
CREATE TABLE tier_state (
    vertical      text NOT NULL,
    tier          integer NOT NULL,
    last_buyer_id text NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (vertical, tier)
);

-- Keyed hashes (HMAC-SHA256) of the sold lead's normalised phone and email: enough to
-- recognise the same person again, useless to recover the number.
ALTER TABLE sales ADD COLUMN phone_hash bytea, ADD COLUMN email_hash bytea;
CREATE INDEX sales_phone_hash ON sales (phone_hash, created_at) WHERE phone_hash IS NOT NULL;
CREATE INDEX sales_email_hash ON sales (email_hash, created_at) WHERE email_hash IS NOT NULL;

CREATE TABLE returns (
    return_id             bigserial PRIMARY KEY,
    sale_id               bigint NOT NULL UNIQUE REFERENCES sales (sale_id),
    ping_id               uuid NOT NULL,
    buyer_id              text NOT NULL,
    seller_id             text NOT NULL,
    vertical              text NOT NULL,
    credit_cents          bigint NOT NULL CHECK (credit_cents > 0),
    payout_reversal_cents bigint NOT NULL CHECK (payout_reversal_cents >= 0),
    reason                text NOT NULL,
    created_at            timestamptz NOT NULL
);
CREATE INDEX returns_buyer_created_at ON returns (buyer_id, created_at);
CREATE INDEX returns_seller_created_at ON returns (seller_id, created_at);

-- Reports scan by time: BRIN indexes are tiny and fit append-only ledgers.
CREATE INDEX bid_outcomes_created_at_brin ON bid_outcomes USING brin (created_at);
CREATE INDEX post_attempts_created_at_brin ON post_attempts USING brin (created_at);
CREATE INDEX posts_claimed_at ON posts (claimed_at);

ALTER TABLE post_attempts DROP CONSTRAINT post_attempts_outcome_check;
ALTER TABLE post_attempts ADD CONSTRAINT post_attempts_outcome_check
    CHECK (outcome IN ('accepted', 'rejected', 'timeout', 'error', 'skipped'));
