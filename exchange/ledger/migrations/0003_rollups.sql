-- Hourly rollups behind the reports, kept up to date in the same transaction as the
-- batched rows they summarise, so a report over a month reads hundreds of rows, not
-- hundreds of millions.

CREATE TABLE buyer_hourly (
    buyer_id text NOT NULL,
    hour     timestamptz NOT NULL,
    pings    bigint NOT NULL DEFAULT 0,   -- called (not screened out)
    bids     bigint NOT NULL DEFAULT 0,
    wins     bigint NOT NULL DEFAULT 0,   -- ranked first
    timeouts bigint NOT NULL DEFAULT 0,
    errors   bigint NOT NULL DEFAULT 0,
    excluded bigint NOT NULL DEFAULT 0,   -- filtered, capped, off schedule, duplicate, blocked
    posts    bigint NOT NULL DEFAULT 0,
    accepted bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (buyer_id, hour)
);

-- Ping latency per buyer and hour as a log-bucket histogram (bucket i counts latencies
-- under exchange.rollups.LATENCY_EDGES_US[i]): enough for a p95 within one bucket.
CREATE TABLE buyer_latency_hourly (
    buyer_id text NOT NULL,
    hour     timestamptz NOT NULL,
    bucket   smallint NOT NULL,
    n        bigint NOT NULL,
    PRIMARY KEY (buyer_id, hour, bucket)
);

CREATE TABLE seller_hourly (
    seller_id text NOT NULL,
    hour      timestamptz NOT NULL,
    pings     bigint NOT NULL DEFAULT 0,
    bids      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (seller_id, hour)
);
