-- The lead pool (SPEC section 10, docs/distribution.md): one row per unsold full lead
-- offered to its vertical's buyers, keyed by its ping id. The non-PII fields are kept in
-- clear (listings and buyers' filters read them); the PII is sealed (AES-256-GCM,
-- exchange/core/sealing.py) under the key named by pii_key_id, and both are set NULL
-- when the offer is claimed or expires. The claim is one conditional UPDATE: the first
-- claimer wins, every later one finds claimed_by set.
CREATE TABLE pool_offers (
    ping_id              uuid PRIMARY KEY,
    seller_id            text NOT NULL,
    vertical             text NOT NULL,
    sub_id               text,                     -- the seller's traffic source
    lead                 jsonb NOT NULL,           -- non-PII fields only, normalised
    phone_hash           bytea,                    -- keyed hashes, for duplicate checks
    email_hash           bytea,
    start_price_cents    bigint NOT NULL CHECK (start_price_cents > 0),
    floor_price_cents    bigint NOT NULL CHECK (floor_price_cents > 0),
    decay_cents_per_hour bigint NOT NULL CHECK (decay_cents_per_hour >= 0),
    entered_at           timestamptz NOT NULL,
    expires_at           timestamptz NOT NULL,
    pii_key_id           text,
    pii                  bytea,
    claimed_by           text,
    claimed_at           timestamptz,
    price_cents          bigint,
    payout_cents         bigint,
    expired_at           timestamptz,
    CHECK (floor_price_cents <= start_price_cents),
    CHECK (expires_at > entered_at),
    CHECK ((pii IS NULL) = (pii_key_id IS NULL)),
    -- Once claimed or expired, no PII is left; a claim has its price and payout.
    CHECK (claimed_by IS NULL OR (pii IS NULL AND claimed_at IS NOT NULL
                                  AND price_cents > 0 AND payout_cents >= 0)),
    CHECK (expired_at IS NULL OR (pii IS NULL AND claimed_by IS NULL))
);
-- Open offers, newest first per vertical (listings), and by expiry (the sweep).
CREATE INDEX pool_offers_open ON pool_offers (vertical, entered_at DESC)
    WHERE claimed_by IS NULL AND expired_at IS NULL;
CREATE INDEX pool_offers_expiry ON pool_offers (expires_at)
    WHERE claimed_by IS NULL AND expired_at IS NULL;
-- Sealed values by key (lead-exchange rotate-key).
CREATE INDEX pool_offers_sealed_key ON pool_offers (pii_key_id) WHERE pii IS NOT NULL;
