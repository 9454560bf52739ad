-- A person being offered, held against another offer of the same person meanwhile
-- (exchange/ledger/reservations.py). Duplicate windows are read from sales; two offers of
-- one person made at the same time (two sellers' posts, a post and a pool claim) both
-- read no sale yet. Each offer first reserves the person's contact hashes in its scope:
-- 'buyer:<id>' for a buyer with a dedupe window, 'vertical:<name>' for a vertical with
-- one. The second offer finds the first's reservation and passes the buyer over (or the
-- vertical's lead) as a duplicate. A reservation whose offer did not sell is deleted; one
-- that sold stays until its time is up, past the end of any walk that read the sales
-- before that sale committed; a sweep deletes those whose time is up.
CREATE TABLE contact_reservations (
    scope        text NOT NULL,
    contact_hash bytea NOT NULL,
    ping_id      uuid NOT NULL,
    until        timestamptz NOT NULL,
    PRIMARY KEY (scope, contact_hash)
);
CREATE INDEX contact_reservations_until ON contact_reservations (until);
