-- Each exchange process's last sign of life: its database health check writes it every
-- second (exchange.store.Store.heartbeat). A post claim whose process has stopped
-- beating is abandoned, and a retry closes it at once instead of waiting for it to age
-- out (post_deadline_ms + 5 s).
CREATE TABLE exchange_processes (
    owner      text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now()
);
