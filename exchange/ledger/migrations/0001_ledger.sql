-- The auction ledger. Money is integer cents. Outcome words are the values of the enums
-- in exchange/outcomes.py (a test keeps the CHECK lists and the enums in step).

CREATE TABLE pings (
    ping_id      uuid PRIMARY KEY,
    seller_id    text NOT NULL,
    vertical     text NOT NULL,
    external_id  text,
    mode         text NOT NULL CHECK (mode IN ('ping', 'direct')),
    tmax_ms      integer NOT NULL,
    lead         jsonb NOT NULL,            -- non-PII fields only, normalised
    status       text NOT NULL CHECK (status IN ('bid', 'no_bid')),
    price_cents  bigint CHECK (price_cents > 0),
    payout_cents bigint CHECK (payout_cents >= 0),
    ping_tree    jsonb NOT NULL,            -- ranked bids, best first
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    duration_us  integer NOT NULL,
    overhead_us  integer NOT NULL
);
CREATE INDEX pings_created_at ON pings (created_at);
CREATE INDEX pings_seller_created_at ON pings (seller_id, created_at);

-- A seller's external_id names one lead: a repeat returns the first result.
CREATE TABLE external_ids (
    seller_id   text NOT NULL,
    external_id text NOT NULL,
    ping_id     uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (seller_id, external_id)
);

CREATE TABLE bid_outcomes (
    ping_id     uuid NOT NULL,
    buyer_id    text NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('bid', 'no_bid', 'timeout', 'error', 'filtered',
                     'capped', 'off_schedule', 'duplicate', 'below_floor', 'seller_blocked')),
    price_cents bigint,
    latency_us  integer,
    rank        integer,
    reason      text,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (ping_id, buyer_id)
);
CREATE INDEX bid_outcomes_buyer_created_at ON bid_outcomes (buyer_id, created_at);

-- One row per seller post of a ping: the claim that makes posts idempotent, then its result.
CREATE TABLE posts (
    ping_id      uuid PRIMARY KEY,
    seller_id    text NOT NULL,
    status       text NOT NULL CHECK (status IN ('in_progress', 'sold', 'unsold')),
    price_cents  bigint,
    payout_cents bigint,
    reason       text,
    claimed_at   timestamptz NOT NULL,
    finished_at  timestamptz
);

CREATE TABLE post_attempts (
    ping_id       uuid NOT NULL,
    attempt       integer NOT NULL,
    buyer_id      text NOT NULL,
    outcome       text NOT NULL CHECK (outcome IN ('accepted', 'rejected', 'timeout', 'error')),
    price_cents   bigint NOT NULL,
    latency_us    integer NOT NULL,
    reason        text,
    buyer_lead_id text,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (ping_id, attempt)
);
CREATE INDEX post_attempts_buyer_created_at ON post_attempts (buyer_id, created_at);

-- The money. A lead is sold at most once per sale slot: (ping_id, sale_seq) is unique and
-- an exclusive lead has one slot, so a race or a retry cannot sell it twice.
CREATE TABLE sales (
    sale_id       bigserial PRIMARY KEY,
    ping_id       uuid NOT NULL,
    sale_seq      smallint NOT NULL DEFAULT 1 CHECK (sale_seq >= 1),
    seller_id     text NOT NULL,
    buyer_id      text NOT NULL,
    vertical      text NOT NULL,
    price_cents   bigint NOT NULL CHECK (price_cents > 0),
    payout_cents  bigint NOT NULL CHECK (payout_cents >= 0 AND payout_cents <= price_cents),
    bid_id        text,
    buyer_lead_id text,
    created_at    timestamptz NOT NULL,
    UNIQUE (ping_id, sale_seq),
    UNIQUE (ping_id, buyer_id)
);
CREATE INDEX sales_buyer_created_at ON sales (buyer_id, created_at);
CREATE INDEX sales_seller_created_at ON sales (seller_id, created_at);
