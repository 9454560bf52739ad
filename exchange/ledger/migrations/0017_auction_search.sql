-- Finding auctions (GET /v1/auctions, exchange/ledger/search.py). Newest first is the
-- primary key read backwards (ping ids are time-ordered), so these serve the filters
-- that would otherwise read far back: a seller's auctions, a traffic source's, and one
-- external id. sub_id is the seller's traffic source (SPEC section 11).
ALTER TABLE pings ADD COLUMN IF NOT EXISTS sub_id text;
CREATE INDEX IF NOT EXISTS pings_seller_ping_id ON pings (seller_id, ping_id);
CREATE INDEX IF NOT EXISTS pings_sub_id_ping_id ON pings (sub_id, ping_id)
    WHERE sub_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS external_ids_external_id ON external_ids (external_id);
