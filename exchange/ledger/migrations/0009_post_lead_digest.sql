-- A keyed digest of the full lead a post was first made with (PII included): a second
-- post of the same ping carrying different contact details is a different lead, answered
-- 409, never told "sold" for the first lead's sale. Not reversible to the lead: HMAC under
-- the exchange's dedupe_hash_key when set, always salted with the ping id.
ALTER TABLE posts ADD COLUMN lead_digest bytea;
