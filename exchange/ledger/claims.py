"""Post claims in the ledger: the insert only one caller can win, reading a claim back
with whether its process is still alive, and closing the claims whose walks are gone.
Also each process's heartbeat, which is how a claim's process is known to be alive.

A claim's ``posts`` row is also the post's result: ``status`` goes from in_progress to
sold or unsold (exchange.core.outcomes.ClaimStatus). Sales close it in
exchange/ledger/sales.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg

from exchange.core.outcomes import ClaimStatus
from exchange.ledger.bounded import LedgerArea, bounded
from exchange.ledger.words import sql_word

_IN_PROGRESS = sql_word(ClaimStatus.IN_PROGRESS)

# How long a process may go without its heartbeat (written every second) before its post
# claims count as abandoned.
OWNER_SILENT_S = 5.0


@dataclass(frozen=True, slots=True)
class PostResult:
    """A post's row: its claim, then its result."""

    ping_id: str
    status: ClaimStatus
    price_cents: int | None
    payout_cents: int | None
    reason: str | None
    claimed_at: datetime
    claimed_by: str | None = None  # the claiming process's Store.owner
    # exchange.core.dedupe.lead_digest of the lead the post was made with (None: not known).
    lead_digest: bytes | None = None
    # The claiming process has not written its heartbeat for OWNER_SILENT_S (or has no
    # heartbeat row at all): it is gone, and so is its walk.
    owner_silent: bool = False
    finished_at: datetime | None = None
    # A sold post's redirect for the seller: that of its first sale (in sale order) whose
    # buyer gave one. Read by read_post (Claims.fetch_post) only; None elsewhere.
    redirect_url: str | None = None
    # Unsold, reason suppressed: the suppression list that matched (its name only).
    suppressed_by: str | None = None


def post_result(row: asyncpg.Record) -> PostResult:
    return PostResult(
        ping_id=str(row["ping_id"]),
        status=ClaimStatus(row["status"]),
        price_cents=row["price_cents"],
        payout_cents=row["payout_cents"],
        reason=row["reason"],
        claimed_at=row["claimed_at"],
        claimed_by=row["claimed_by"],
        owner_silent=row.get("owner_silent", False),
        lead_digest=row.get("lead_digest"),
        finished_at=row["finished_at"],
        suppressed_by=row.get("suppressed_by"),
    )


_FETCH_POST = """
SELECT p.*, p.claimed_by IS NOT NULL
            AND (h.seen_at IS NULL OR h.seen_at < now() - make_interval(secs => $2))
            AS owner_silent
FROM posts p LEFT JOIN exchange_processes h ON h.owner = p.claimed_by
WHERE p.ping_id = $1
"""
# A sold post's redirect for the seller. A statement of its own, read only once the post
# is sold (its sales are then final): reading a claim in progress never touches ``sales``,
# so it is not held up by what holds that table.
_SOLD_REDIRECT = """
SELECT redirect_url FROM sales
WHERE ping_id = $1 AND redirect_url IS NOT NULL ORDER BY sale_seq LIMIT 1
"""


async def read_post(db: asyncpg.Pool | asyncpg.Connection, ping_id: uuid.UUID) -> PostResult | None:
    """A post's row as Claims.fetch_post gives it: with whether its process is silent, and
    a sold post's redirect for the seller."""
    row = await db.fetchrow(_FETCH_POST, ping_id, OWNER_SILENT_S)
    if row is None:
        return None
    result = post_result(row)
    if result.status is not ClaimStatus.SOLD:
        return result
    return replace(result, redirect_url=await db.fetchval(_SOLD_REDIRECT, ping_id))


# Closing a claim whose walk is gone (Claims.close_interrupted): lock it while in progress
# (only a given process's, made at a given moment, when those are given), then, in the
# next statement, close it with what its committed sales add up to.
_LOCK_CLAIM = f"""
SELECT true FROM posts
WHERE ping_id = $1 AND status = {_IN_PROGRESS}
  AND ($2::text IS NULL OR claimed_by = $2)
  AND ($3::timestamptz IS NULL OR claimed_at = $3)
FOR UPDATE
"""
_CLOSE_CLAIM = f"""
UPDATE posts p SET status = CASE WHEN s.n > 0 THEN {sql_word(ClaimStatus.SOLD)}
                                 ELSE {sql_word(ClaimStatus.UNSOLD)} END,
                   price_cents = CASE WHEN s.n > 0 THEN s.price END,
                   payout_cents = CASE WHEN s.n > 0 THEN s.payout END,
                   reason = CASE WHEN s.n > 0 THEN NULL ELSE $2 END, finished_at = $3
FROM (SELECT count(*) AS n, sum(price_cents) AS price, sum(payout_cents) AS payout
      FROM sales WHERE ping_id = $1) s
WHERE p.ping_id = $1
"""


async def _close_claim(
    conn: asyncpg.Connection,
    ping_id: uuid.UUID,
    reason: str,
    finished_at: datetime,
    owner: str | None = None,
    claimed_at: datetime | None = None,
) -> bool:
    async with conn.transaction():
        if not await conn.fetchval(_LOCK_CLAIM, ping_id, owner, claimed_at):
            return False
        await conn.execute(_CLOSE_CLAIM, ping_id, reason, finished_at)
    return True


async def close_claims_of(
    conn: asyncpg.Connection, owner: str, since: datetime, reason: str, finished_at: datetime
) -> int:
    """Close every post claim still in progress that the process ``owner`` made since
    ``since``, as Claims.close_interrupted does: for a process known to be dead (a worker
    its supervisor saw exit), so nothing of it is walking them any more. Returns how many
    it closed."""
    ping_ids = await conn.fetch(
        "SELECT ping_id FROM posts"
        f" WHERE claimed_at >= $2 AND claimed_by = $1 AND status = {_IN_PROGRESS}",
        owner,
        since,
    )
    closed = 0
    for row in ping_ids:
        if await _close_claim(conn, row["ping_id"], reason, finished_at, owner):
            closed += 1
    return closed


class Claims(LedgerArea):
    async def heartbeat(self) -> None:
        """This process is alive (and the ledger takes writes): run every second by the
        database health check. A claim of a process silent for OWNER_SILENT_S is
        abandoned (PostResult.owner_silent)."""
        async with self.pool.acquire(timeout=1) as conn:
            await conn.execute(
                "INSERT INTO exchange_processes (owner) VALUES ($1)"
                " ON CONFLICT (owner) DO UPDATE SET seen_at = now()",
                self.owner,
            )

    async def leave(self) -> None:
        """This process stops (its walks are over): its heartbeat row goes, along with
        rows of processes silent for a week."""
        await self.pool.execute(
            "DELETE FROM exchange_processes"
            " WHERE owner = $1 OR seen_at < now() - interval '7 days'",
            self.owner,
        )

    @bounded
    async def claim_post(
        self, ping_id: str, seller_id: str, now: datetime, lead_digest: bytes | None = None
    ) -> PostResult | None:
        """Claim the right to post this ping with the lead of ``lead_digest``. None:
        claimed by us. Else the existing claim."""
        pid = uuid.UUID(ping_id)
        async with self.pool.acquire() as conn:
            claimed = await conn.fetchval(
                "INSERT INTO posts (ping_id, seller_id, status, claimed_at, claimed_by,"
                " lead_digest) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                pid,
                seller_id,
                ClaimStatus.IN_PROGRESS.value,
                now,
                self.owner,
                lead_digest,
            )
            if claimed:
                return None
            row = await conn.fetchrow("SELECT * FROM posts WHERE ping_id = $1", pid)
        assert row is not None
        return post_result(row)

    @bounded
    async def fetch_post(self, ping_id: str) -> PostResult | None:
        return await read_post(self.pool, uuid.UUID(ping_id))

    @bounded
    async def close_interrupted(
        self, ping_id: str, reason: str, finished_at: datetime, claimed_at: datetime | None = None
    ) -> bool:
        """Close a post whose walker died: sold if it made sales (with their sums, which is
        what the ledger owes), else unsold. With ``claimed_at``, only this process's claim
        made at that moment is closed (a walk of its own that failed). True if it closed
        one.

        The claim is locked first, in a statement of its own: a sale still holding it (a
        shared lead's, in flight) is waited for, and the sales are then counted in a
        fresh snapshot that has it. (In one statement the count would come from before
        the wait, and the post could close unsold beside a sale.)"""
        owner = self.owner if claimed_at is not None else None
        async with self.pool.acquire() as conn:
            return await _close_claim(
                conn, uuid.UUID(ping_id), reason, finished_at, owner, claimed_at
            )
