-- Reserving a sale under a buyer's caps in one round trip: one conditional increment per
-- window, all or none. Returns 0 when every window took the sale, else the (1-based)
-- index of the first window whose limit it would break; then no window is changed (the
-- inner block's increments are rolled back with it).
CREATE FUNCTION reserve_cap_windows(
    p_buyer_id text, p_periods text[], p_starts timestamptz[], p_max_counts integer[],
    p_max_spends bigint[], p_price_cents bigint
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    reached integer := 0;
    counted integer;
BEGIN
    BEGIN
        FOR i IN 1 .. coalesce(array_length(p_periods, 1), 0) LOOP
            IF (p_max_counts[i] IS NOT NULL AND p_max_counts[i] < 1)
               OR (p_max_spends[i] IS NOT NULL AND p_price_cents > p_max_spends[i]) THEN
                reached := i;  -- the sale alone breaks this limit
            ELSE
                INSERT INTO cap_counters AS c (buyer_id, period, period_start, sales, spent_cents)
                VALUES (p_buyer_id, p_periods[i], p_starts[i], 1, p_price_cents)
                ON CONFLICT (buyer_id, period, period_start) DO UPDATE
                SET sales = c.sales + 1, spent_cents = c.spent_cents + p_price_cents
                WHERE (p_max_counts[i] IS NULL OR c.sales + 1 <= p_max_counts[i])
                  AND (p_max_spends[i] IS NULL OR c.spent_cents + p_price_cents <= p_max_spends[i])
                RETURNING sales INTO counted;
                IF counted IS NULL THEN
                    reached := i;
                END IF;
            END IF;
            IF reached > 0 THEN
                RAISE EXCEPTION USING ERRCODE = 'LXCAP';
            END IF;
        END LOOP;
    EXCEPTION WHEN SQLSTATE 'LXCAP' THEN
        RETURN reached;
    END;
    RETURN 0;
END;
$$;
