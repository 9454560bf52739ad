-- The lead score (SPEC section 10, exchange/core/scoring.py): each ping's score, 0-100,
-- from its vertical's rules; NULL when the vertical does not score its leads (and on
-- pings recorded before scores were kept). pings is partitioned by day: the column and
-- its check reach every partition from the parent.
ALTER TABLE pings ADD COLUMN IF NOT EXISTS score smallint
    CHECK (score >= 0 AND score <= 100);

-- The seller report's average score (GET /v1/reports/sellers, avg_score): per seller and
-- hour, how many pings were scored and the sum of their scores, added to by the batch
-- writer in the statement that inserts the pings (exchange/ledger/rollups.py), so the
-- average is exact over any range of whole hours.
ALTER TABLE seller_hourly ADD COLUMN IF NOT EXISTS scored bigint NOT NULL DEFAULT 0;
ALTER TABLE seller_hourly ADD COLUMN IF NOT EXISTS score_sum bigint NOT NULL DEFAULT 0;
