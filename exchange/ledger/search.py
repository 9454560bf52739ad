"""Finding auctions (SPEC section 11): ``GET /v1/auctions`` filtered by seller, buyer,
vertical, status, external id, sub-ID and time, newest first, a page at a time.

Order and cursor. Ping ids are time-ordered UUIDs (version 7: exchange/auction/context.py),
so "newest first" is the primary key read backwards, and the cursor is the last ping id
of a page: the next page is ``ping_id < cursor``, as fast on page 1,000 as on page 1 and
stable while new auctions arrive. No index is added on time for it: the ledger keeps
none on ``pings.created_at`` but a BRIN (0004), which serves ``from``/``to`` when the
range is narrow.

Which index serves which filter (migration 0017; EXPLAIN output in docs/operations.md):

- none, ``vertical``, ``status``: the primary key, backwards, checking each row; the
  first page stops after ``limit`` matching rows.
- ``seller`` (and a seller's own reads): ``pings_seller_ping_id`` (seller_id, ping_id).
- ``sub_id``: ``pings_sub_id_ping_id`` (sub_id, ping_id), partial (rows with one).
- ``external_id``: ``external_ids_external_id`` (external_id), then the ping by key.
- ``buyer``: each candidate ping probes ``bid_outcomes``' primary key (ping_id,
  buyer_id); a buyer in most auctions of its verticals is found at once, a rare one reads
  further back (add ``from``/``to`` or ``vertical`` to bound it).
- ``from``/``to``: the BRIN on ``created_at`` when the range is narrow.

The SQL is put together from the filters given, values always as parameters: a generic
``($1 IS NULL OR …)`` form would hide from the planner which index applies.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exchange.ledger.bounded import LedgerArea, bounded

# The final status of an auction: its post's when the lead was posted, else its ping's.
STATUSES = ("bid", "no_bid", "sold", "unsold", "in_progress", "queued")


@dataclass(frozen=True, slots=True)
class AuctionFilter:
    seller: str | None = None
    buyer: str | None = None
    vertical: str | None = None
    status: str | None = None
    external_id: str | None = None
    sub_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: str | None = None  # the cursor: a ping id; only older ones
    limit: int = 50


@dataclass(frozen=True, slots=True)
class AuctionSummary:
    ping_id: str
    seller_id: str
    vertical: str
    mode: str
    external_id: str | None
    sub_id: str | None
    status: str
    created_at: datetime
    price_cents: int | None  # the quoted price (the ping's top bid)
    payout_cents: int | None
    sold_cents: int | None  # what buyers paid, when sold
    duration_us: int


def search_sql(where: AuctionFilter) -> tuple[str, list[Any]]:
    """The query for one page (``limit + 1`` rows: one more says there is a next page)."""
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    clauses: list[str] = []
    if where.seller is not None:
        clauses.append(f"p.seller_id = {arg(where.seller)}")
    if where.vertical is not None:
        clauses.append(f"p.vertical = {arg(where.vertical)}")
    if where.sub_id is not None:
        clauses.append(f"p.sub_id = {arg(where.sub_id)}")
    if where.external_id is not None:
        clauses.append(
            "p.ping_id IN (SELECT e.ping_id FROM external_ids e"
            f" WHERE e.external_id = {arg(where.external_id)})"
        )
    if where.buyer is not None:
        clauses.append(
            "EXISTS (SELECT 1 FROM bid_outcomes b WHERE b.ping_id = p.ping_id"
            f" AND b.buyer_id = {arg(where.buyer)})"
        )
    if where.since is not None:
        clauses.append(f"p.created_at >= {arg(where.since)}")
    if where.until is not None:
        clauses.append(f"p.created_at < {arg(where.until)}")
    if where.before is not None:
        clauses.append(f"p.ping_id < {arg(uuid.UUID(where.before))}")
    if where.status in ("bid", "no_bid"):
        clauses.append(f"p.status = {arg(where.status)} AND po.ping_id IS NULL")
    elif where.status is not None:
        clauses.append(f"po.status = {arg(where.status)}")
    condition = " AND ".join(clauses) if clauses else "true"
    sql = (
        "SELECT p.ping_id, p.seller_id, p.vertical, p.mode, p.external_id, p.sub_id,"
        " COALESCE(po.status, p.status) AS status, p.created_at, p.price_cents,"
        " p.payout_cents, CASE WHEN po.status = 'sold' THEN po.price_cents END AS sold_cents,"
        " p.duration_us"
        " FROM pings p LEFT JOIN posts po ON po.ping_id = p.ping_id"
        f" WHERE {condition}"
        f" ORDER BY p.ping_id DESC LIMIT {arg(where.limit + 1)}"
    )
    return sql, args


class Search(LedgerArea):
    @bounded
    async def search_auctions(self, where: AuctionFilter) -> tuple[list[AuctionSummary], bool]:
        """One page of auctions, newest first, and whether an older page follows."""
        sql, args = search_sql(where)
        rows = await self.pool.fetch(sql, *args)
        more = len(rows) > where.limit
        found = [
            AuctionSummary(
                ping_id=str(r["ping_id"]),
                seller_id=r["seller_id"],
                vertical=r["vertical"],
                mode=r["mode"],
                external_id=r["external_id"],
                sub_id=r["sub_id"],
                status=r["status"],
                created_at=r["created_at"],
                price_cents=r["price_cents"],
                payout_cents=r["payout_cents"],
                sold_cents=r["sold_cents"],
                duration_us=r["duration_us"],
            )
            for r in rows[: where.limit]
        ]
        return found, more
