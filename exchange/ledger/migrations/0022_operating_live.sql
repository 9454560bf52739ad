-- Operating it live (SPEC section 11, docs/operations.md): the per-seller, per-sub-ID
-- report, one auction's returns, and the claim that makes one process, not every one,
-- probe an auto-paused buyer.

-- The time no ledger row of a ping id is older than: exchange/ledger/pings.py's
-- recorded_since in SQL (a day before the time in a version 7 id; for any other, the
-- beginning). A lookup of a ping by id bounded by it reads the newest day partitions
-- only, also when the id comes from another row (a sale's, a return's).
CREATE FUNCTION ledger_ping_recorded_since(p_ping_id uuid) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN get_byte(uuid_send(p_ping_id), 6) >> 4 = 7
        THEN to_timestamp(('x' || substr(encode(uuid_send(p_ping_id), 'hex'), 1, 12))::bit(48)::bigint
                          / 1000.0) - interval '24 hours'
        ELSE '-infinity'::timestamptz END
$$;

-- GET /v1/reports/sellers?by=sub_id and the dashboard's sub-ID table: per seller and
-- sub-ID (NULL: pings that named none), the seller report's figures over [since, until),
-- each counted as the seller report counts it (pings and bids by the ping's time, posts
-- by their claim's, sales and returns by their own), its sub-ID the ping's. Read from
-- the ledger rows, so it covers exchange.retention_days. SECURITY DEFINER and closed to
-- PUBLIC: a read-only role granted EXECUTE on it alone (a dashboard's database user)
-- reads these totals and nothing else of the ledger.
CREATE FUNCTION seller_sub_id_report(p_since timestamptz, p_until timestamptz)
RETURNS TABLE (seller_id text, sub_id text, pings bigint, bids bigint, posts bigint,
               sales bigint, revenue_cents bigint, payout_cents bigint, returns bigint,
               reversed_cents bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT x.seller_id, x.sub_id, sum(x.pings)::bigint, sum(x.bids)::bigint,
           sum(x.posts)::bigint, sum(x.sales)::bigint, sum(x.revenue_cents)::bigint,
           sum(x.payout_cents)::bigint, sum(x.returns)::bigint, sum(x.reversed_cents)::bigint
    FROM (
        SELECT p.seller_id, p.sub_id, 1 AS pings, (p.status = 'bid')::int AS bids, 0 AS posts,
               0 AS sales, 0::bigint AS revenue_cents, 0::bigint AS payout_cents, 0 AS returns,
               0::bigint AS reversed_cents
        FROM pings p WHERE p.created_at >= p_since AND p.created_at < p_until
        UNION ALL
        SELECT o.seller_id, (SELECT p.sub_id FROM pings p WHERE p.ping_id = o.ping_id
                             AND p.created_at >= ledger_ping_recorded_since(o.ping_id) LIMIT 1),
               0, 0, 1, 0, 0, 0, 0, 0
        FROM posts o WHERE o.claimed_at >= p_since AND o.claimed_at < p_until
        UNION ALL
        SELECT s.seller_id, (SELECT p.sub_id FROM pings p WHERE p.ping_id = s.ping_id
                             AND p.created_at >= ledger_ping_recorded_since(s.ping_id) LIMIT 1),
               0, 0, 0, 1, s.price_cents, s.payout_cents, 0, 0
        FROM sales s WHERE s.created_at >= p_since AND s.created_at < p_until
        UNION ALL
        SELECT r.seller_id, (SELECT p.sub_id FROM pings p WHERE p.ping_id = r.ping_id
                             AND p.created_at >= ledger_ping_recorded_since(r.ping_id) LIMIT 1),
               0, 0, 0, 0, 0, 0, 1, r.payout_reversal_cents
        FROM returns r WHERE r.created_at >= p_since AND r.created_at < p_until
    ) x
    GROUP BY x.seller_id, x.sub_id
    ORDER BY x.seller_id, x.sub_id NULLS FIRST
$$;
REVOKE ALL ON FUNCTION seller_sub_id_report(timestamptz, timestamptz) FROM PUBLIC;

-- The auction record's returns (GET /v1/auctions/{ping_id}).
CREATE INDEX returns_ping_id ON returns (ping_id);

-- Auto-pause probes (exchange/auction/autopause.py): one row per buyer, the auto-pause
-- (its settings version) it was last probed under and when. A process probes only after
-- claiming the row in one atomic statement, so of N processes whose cool-down ends
-- together exactly one sends the probe, and the next cool-down counts from it.
CREATE TABLE buyer_probes (
    buyer_id      text PRIMARY KEY,
    pause_version bigint NOT NULL,
    probed_at     timestamptz NOT NULL,
    probed_by     text NOT NULL
);
