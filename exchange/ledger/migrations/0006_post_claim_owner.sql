-- Which exchange process claimed a post (an id it chooses at start): a claim left
-- in progress by a walk of the same process that failed (its ledger went away midway)
-- can be closed at once by that process, instead of aging out as a dead process's would.
ALTER TABLE posts ADD COLUMN claimed_by text;
