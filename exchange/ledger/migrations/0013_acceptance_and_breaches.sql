-- Expected-value ranking and binding bids (SPEC section 9, docs/auction.md "Rankings").
--
-- The auction record keeps what decided each auction: the ranking (pings.ranking; NULL on
-- auctions recorded before it was kept, which were ranked by price) and, per bid in the
-- ping tree, its buyer's p(accept) then and its expected value (price x p, rounded down).
ALTER TABLE pings ADD COLUMN IF NOT EXISTS ranking text CHECK (ranking IN ('price', 'expected_value'));
ALTER TABLE bid_outcomes ADD COLUMN IF NOT EXISTS p_accept double precision
    CHECK (p_accept >= 0 AND p_accept <= 1);
ALTER TABLE bid_outcomes ADD COLUMN IF NOT EXISTS expected_value_cents bigint;

-- A post attempt knows its vertical (p(accept) is per buyer and vertical) and whether its
-- reject broke a binding bid (a reason outside the vertical's reject_reasons_allowed).
ALTER TABLE post_attempts ADD COLUMN IF NOT EXISTS vertical text;
ALTER TABLE post_attempts ADD COLUMN IF NOT EXISTS breach boolean NOT NULL DEFAULT false;
ALTER TABLE buyer_hourly ADD COLUMN IF NOT EXISTS breaches bigint NOT NULL DEFAULT 0;

-- The rolling aggregate behind p(accept): posts, acceptances and breaches per vertical,
-- day (UTC) and buyer, added to by the batch writer in the statement that inserts the
-- post attempts (exchange/ledger/rollups.py), so it is exact and never rescanned. Every
-- exchange process reads the window's sum from here every few seconds
-- (exchange/auction/acceptance.py): a few rows per buyer, not a scan per ping.
CREATE TABLE IF NOT EXISTS buyer_acceptance_daily (
    vertical text NOT NULL,
    day      date NOT NULL,
    buyer_id text NOT NULL,
    posts    bigint NOT NULL DEFAULT 0,
    accepted bigint NOT NULL DEFAULT 0,
    breaches bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (vertical, day, buyer_id)
);

-- auction: first_bid (docs/auction.md): buyers whose bids were set aside, or whose pings
-- were given up on, once another buyer's bid at or above the floor came first.
ALTER TABLE bid_outcomes DROP CONSTRAINT IF EXISTS bid_outcomes_outcome_check;
ALTER TABLE bid_outcomes ADD CONSTRAINT bid_outcomes_outcome_check
    CHECK (outcome IN ('bid', 'no_bid', 'timeout', 'error', 'filtered', 'capped',
                       'off_schedule', 'duplicate', 'below_floor', 'seller_blocked',
                       'cancelled'));
