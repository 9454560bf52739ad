"""Held leads in the ledger (``held_leads``, migration 0021): holding a lead, the claim
that lets one process at a time deliver a hold, and the hold's end, sold or expired.

What must never break is the database's to enforce:

- **Held once, answered once.** A lead is held in the statement that turns its post from
  in_progress to queued; a post no longer in progress holds nothing.
- **One deliverer.** A process claims due holds with ``FOR UPDATE SKIP LOCKED`` and gets a
  fresh claim token and a lease; no other process can claim them until the lease ends
  (a process that dies mid-delivery loses them then). Times are the exchange's clock
  (passed in), so a test can move it.
- **Sold at most once.** The sale of a held lead goes in only while the hold is still
  held under that very claim token and its post queued (``sales (ping_id, sale_seq)`` is
  unique besides); the same statement closes the post sold and the hold, purging its PII.
  A claim taken over after its lease ended leaves the old token's sale refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exchange.core.holds import HeldBuyer, HoldState
from exchange.core.outcomes import ClaimStatus, UnsoldReason
from exchange.core.sealing import Sealed
from exchange.ledger.bounded import LedgerArea, bounded, row_count
from exchange.ledger.sales import SaleRow, sale_values
from exchange.ledger.words import sql_word

_HELD = sql_word(HoldState.HELD)
_QUEUED = sql_word(ClaimStatus.QUEUED)


@dataclass(frozen=True, slots=True)
class NewHold:
    """A lead about to be held: what delivering it later needs, PII sealed."""

    ping_id: str
    seller_id: str
    vertical: str
    lead: dict[str, Any]  # non-PII fields
    pii: Sealed
    buyers: tuple[HeldBuyer, ...]
    min_payout_cents: int
    phone_hash: bytes | None
    email_hash: bytes | None
    first_attempt: int  # the post_attempts number of its first delivery attempt
    held_at: datetime
    hold_until: datetime
    next_check_at: datetime
    sub_id: str | None = None


@dataclass(frozen=True, slots=True)
class HeldLead:
    """A held lead as the ledger has it (``claim_token`` set when read by a claim)."""

    ping_id: str
    seller_id: str
    vertical: str
    state: HoldState
    lead: dict[str, Any]
    pii: Sealed | None  # None once the hold is over (purged)
    buyers: tuple[HeldBuyer, ...]
    tried: tuple[str, ...]
    min_payout_cents: int
    phone_hash: bytes | None
    email_hash: bytes | None
    first_attempt: int
    attempts: int
    held_at: datetime
    hold_until: datetime
    next_check_at: datetime
    claim_token: str | None
    buyer_id: str | None
    finished_at: datetime | None
    sub_id: str | None = None


def _held_lead(row: Mapping[str, Any]) -> HeldLead:
    sealed = None
    if row["pii"] is not None:
        sealed = Sealed(row["pii_key_id"], bytes(row["pii"]))
    token = row["claim_token"]
    return HeldLead(
        ping_id=str(row["ping_id"]),
        seller_id=row["seller_id"],
        vertical=row["vertical"],
        state=HoldState(row["state"]),
        lead=row["lead"],
        pii=sealed,
        buyers=tuple(HeldBuyer.from_json(b) for b in row["buyers"]),
        tried=tuple(row["tried"]),
        min_payout_cents=row["min_payout_cents"],
        phone_hash=row["phone_hash"],
        email_hash=row["email_hash"],
        first_attempt=row["first_attempt"],
        attempts=row["attempts"],
        held_at=row["held_at"],
        hold_until=row["hold_until"],
        next_check_at=row["next_check_at"],
        claim_token=None if token is None else str(token),
        buyer_id=row["buyer_id"],
        finished_at=row["finished_at"],
        sub_id=row["sub_id"],
    )


# Holding: the post turns queued and the hold goes in, or neither (not in progress).
_HOLD = f"""
WITH queued AS (
    UPDATE posts SET status = {_QUEUED}, reason = NULL, finished_at = $12
    WHERE ping_id = $1 AND status = {sql_word(ClaimStatus.IN_PROGRESS)}
    RETURNING ping_id
)
INSERT INTO held_leads (ping_id, seller_id, vertical, state, lead, pii_key_id, pii, buyers,
                        min_payout_cents, phone_hash, email_hash, first_attempt, held_at,
                        hold_until, next_check_at, sub_id)
SELECT $1, $2, $3, {_HELD}, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 FROM queued
RETURNING 1
"""

# Claiming due holds: those held, due, and not under a live lease; skipping any another
# process is claiming this very moment.
_CLAIM_DUE = f"""
UPDATE held_leads h SET claimed_by = $1, claim_token = gen_random_uuid(), lease_until = $3
FROM (SELECT ping_id FROM held_leads
      WHERE state = {_HELD} AND next_check_at <= $2
        AND (lease_until IS NULL OR lease_until <= $2)
      ORDER BY next_check_at LIMIT $4
      FOR UPDATE SKIP LOCKED) due
WHERE h.ping_id = due.ping_id
RETURNING h.*
"""

# One delivery attempt to a buyer under the claim: its post_attempts number, and the
# buyer is not offered the lead again.
_NOTE_ATTEMPT = f"""
UPDATE held_leads SET attempts = attempts + 1, tried = array_append(tried, $3)
WHERE ping_id = $1 AND claim_token = $2 AND state = {_HELD}
RETURNING first_attempt + attempts - 1
"""

_UNTRY = f"""
UPDATE held_leads SET tried = array_remove(tried, $3)
WHERE ping_id = $1 AND claim_token = $2 AND state = {_HELD}
"""

_RELEASE = f"""
UPDATE held_leads SET next_check_at = $3, claimed_by = NULL, claim_token = NULL,
                      lease_until = NULL
WHERE ping_id = $1 AND claim_token = $2 AND state = {_HELD}
"""

# The sale of a held lead, its post closed sold and the hold closed, in one statement
# that does nothing unless the claim is still this one and the post still queued.
_SELL = f"""
WITH hold AS (
    SELECT ping_id FROM held_leads
    WHERE ping_id = $1 AND claim_token = $14 AND state = {_HELD}
    FOR UPDATE
), claim AS (
    SELECT p.ping_id FROM posts p JOIN hold USING (ping_id)
    WHERE p.status = {_QUEUED}
    FOR UPDATE OF p
), sale AS (
    INSERT INTO sales (ping_id, sale_seq, seller_id, buyer_id, vertical, price_cents,
                       payout_cents, bid_id, buyer_lead_id, created_at, phone_hash, email_hash,
                       redirect_url)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 FROM claim
    ON CONFLICT DO NOTHING
    RETURNING 1
), sold AS (
    UPDATE posts SET status = {sql_word(ClaimStatus.SOLD)}, price_cents = $6,
                     payout_cents = $7, reason = NULL, finished_at = $10
    WHERE ping_id = $1 AND EXISTS (SELECT 1 FROM sale)
    RETURNING 1
), closed AS (
    UPDATE held_leads SET state = {sql_word(HoldState.SOLD)}, buyer_id = $4, finished_at = $10,
                          pii = NULL, pii_key_id = NULL, claimed_by = NULL,
                          claim_token = NULL, lease_until = NULL
    WHERE ping_id = $1 AND EXISTS (SELECT 1 FROM sale)
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM sale) AS sold
"""

# The hold ends unsold: its post too (reason $3), its PII purged.
_EXPIRE = f"""
WITH hold AS (
    UPDATE held_leads SET state = {sql_word(HoldState.EXPIRED)}, finished_at = $4,
                          pii = NULL, pii_key_id = NULL, claimed_by = NULL,
                          claim_token = NULL, lease_until = NULL
    WHERE ping_id = $1 AND claim_token = $2 AND state = {_HELD}
    RETURNING ping_id
), unsold AS (
    UPDATE posts p SET status = {sql_word(ClaimStatus.UNSOLD)}, reason = $3, finished_at = $4,
                       suppressed_by = $5
    FROM hold WHERE p.ping_id = hold.ping_id AND p.status = {_QUEUED}
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM hold) AS expired
"""


class Holds(LedgerArea):
    @bounded
    async def hold_lead(self, hold: NewHold) -> bool:
        """Hold a lead whose post is in progress, and turn the post queued, at once.
        False (nothing held) when the post is no longer in progress."""
        held = await self.pool.fetchval(
            _HOLD,
            uuid.UUID(hold.ping_id),
            hold.seller_id,
            hold.vertical,
            hold.lead,
            hold.pii.key_id,
            hold.pii.blob,
            [b.to_json() for b in hold.buyers],
            hold.min_payout_cents,
            hold.phone_hash,
            hold.email_hash,
            hold.first_attempt,
            hold.held_at,
            hold.hold_until,
            hold.next_check_at,
            hold.sub_id,
        )
        return bool(held)

    async def claim_due_holds(
        self, now: datetime, lease_until: datetime, limit: int = 20
    ) -> list[HeldLead]:
        """Claim up to ``limit`` holds due at ``now`` for this process until
        ``lease_until``; each comes back with its claim token."""
        rows = await self.pool.fetch(_CLAIM_DUE, self.owner, now, lease_until, limit)
        return [_held_lead(r) for r in rows]

    async def note_hold_attempt(self, ping_id: str, token: str, buyer_id: str) -> int | None:
        """Record that ``buyer_id`` is being offered the held lead; returns the attempt's
        post_attempts number, or None when the claim is no longer this one."""
        value = await self.pool.fetchval(
            _NOTE_ATTEMPT, uuid.UUID(ping_id), uuid.UUID(token), buyer_id
        )
        return None if value is None else int(value)

    async def recheck_holds(self, verticals: Sequence[str], now: datetime) -> int:
        """Make every held lead of these verticals due now (a suppression list they use
        changed: the next delivery pass checks each first); how many."""
        done = await self.pool.execute(
            f"UPDATE held_leads SET next_check_at = $2 WHERE state = {_HELD}"
            " AND vertical = ANY($1::text[]) AND next_check_at > $2",
            list(verticals),
            now,
        )
        return row_count(done)

    async def untry_hold_buyer(self, ping_id: str, token: str, buyer_id: str) -> None:
        """``buyer_id`` was noted as offered the held lead but could not be (capped, or its
        person offered it by another lead): it is waiting again, for a later check."""
        await self.pool.execute(_UNTRY, uuid.UUID(ping_id), uuid.UUID(token), buyer_id)

    async def release_hold(self, ping_id: str, token: str, next_check_at: datetime) -> bool:
        """Give the claim up; the hold is due again at ``next_check_at``."""
        done = await self.pool.execute(
            _RELEASE, uuid.UUID(ping_id), uuid.UUID(token), next_check_at
        )
        return bool(done == "UPDATE 1")

    async def sell_held(self, sale: SaleRow, token: str) -> bool:
        """Commit the sale of a held lead under claim ``token``, closing its post sold and
        the hold; False (nothing written) when the claim or the post moved on."""
        return bool(
            await self.pool.fetchval(
                _SELL,
                *sale_values(sale),
                uuid.UUID(token),
            )
        )

    async def expire_hold(
        self,
        ping_id: str,
        token: str,
        reason: UnsoldReason,
        finished_at: datetime,
        suppressed_by: str | None = None,
    ) -> bool:
        """End the hold unsold (its post unsold with ``reason``, and the suppression list
        that matched, if any); False when the claim is no longer this one."""
        return bool(
            await self.pool.fetchval(
                _EXPIRE,
                uuid.UUID(ping_id),
                uuid.UUID(token),
                reason.value,
                finished_at,
                suppressed_by,
            )
        )

    async def fetch_hold(self, ping_id: str) -> HeldLead | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM held_leads WHERE ping_id = $1", uuid.UUID(ping_id)
        )
        return None if row is None else _held_lead(row)

    async def held_counts(self) -> dict[str, int]:
        """Leads held now, by vertical."""
        rows = await self.pool.fetch(
            f"SELECT vertical, count(*) AS n FROM held_leads WHERE state = {_HELD}"
            " GROUP BY vertical"
        )
        return {r["vertical"]: r["n"] for r in rows}
