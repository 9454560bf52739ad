-- Where the buyer of a sale wants the consumer sent (SPEC section 8), kept with the sale
-- so that a retry of the post, answered from the ledger by any process, hears the same
-- redirect_url as the first answer did. NULL: the buyer gave none, or gave one the
-- exchange dropped (exchange/core/redirects.py: an absolute http(s) URL of at most 2048
-- characters, carrying none of the lead's PII). No CHECK here: a redirect is cleaned
-- before the sale is written, and a constraint could only turn a sale into an error.
ALTER TABLE sales ADD COLUMN redirect_url text;
