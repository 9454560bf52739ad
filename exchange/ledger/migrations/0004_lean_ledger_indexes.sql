-- Reports read the hourly rollups (0003), so the per-buyer and per-seller time indexes on
-- the raw ledger rows no longer serve a query, while every batched row paid for them.
-- Raw rows are read by ping (primary keys) and by time range (BRIN on created_at, which
-- costs next to nothing to keep up as rows arrive in time order).
DROP INDEX IF EXISTS bid_outcomes_buyer_created_at;
DROP INDEX IF EXISTS post_attempts_buyer_created_at;
DROP INDEX IF EXISTS pings_seller_created_at;
DROP INDEX IF EXISTS pings_created_at;
CREATE INDEX IF NOT EXISTS pings_created_at_brin ON pings USING brin (created_at);
