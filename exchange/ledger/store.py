"""The ledger in PostgreSQL: migrations, the money writes, and the reads behind the APIs.

Plain SQL with parameters. What must never break is enforced by the database itself:
``sales (ping_id, sale_seq)`` is unique, and a post is claimed with an insert that only
one caller can win. Non-money rows (pings, bid outcomes, post attempts) arrive through
the batch writer; the sale and the post result are written here, synchronously, before
the seller hears the answer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg
import orjson

from exchange.core.caps import CapWindow
from exchange.core.outcomes import PostStatus
from exchange.ledger.rollups import REBUILD_SQL, ROLLUP_ARGS

MIGRATIONS_PACKAGE = "exchange.ledger.migrations"


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary jsonb (a version byte, then the JSON text), encoded by orjson.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: b"\x01" + orjson.dumps(v),
        decoder=lambda b: orjson.loads(b[1:]),
        schema="pg_catalog",
        format="binary",
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset: the exchange leaves no session state behind (no SET, LISTEN,
    cursors or held advisory locks), so a connection goes back to the pool without
    asyncpg's default reset query, one round trip less per pooled use. (An open
    transaction is still rolled back by asyncpg before this runs.)"""


async def create_pool(
    dsn: str, min_size: int = 2, max_size: int = 10, synchronous_commit: bool = True
) -> asyncpg.Pool:
    """A pool of ledger connections. ``synchronous_commit=False`` is for the batch writer
    alone (exchange/ledger/batch.py): its commits return once PostgreSQL has the rows, before
    they reach the disk. They survive the exchange crashing, not PostgreSQL crashing
    (that loses at most the last ~0.6 s of batched rows, never money: sales and post
    results go through a synchronous pool)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={} if synchronous_commit else {"synchronous_commit": "off"},
        init=_init_connection,
        reset=_keep_session,
        command_timeout=10,
        max_inactive_connection_lifetime=60,
    )
    assert pool is not None
    return pool


def _migration_files() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), name, entry.read_text()))
    return sorted(found)


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction; returns their names.

    An advisory lock serialises concurrent starters (several workers, several nodes).
    """
    applied: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock(72150001)")
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, name, sql in _migration_files():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        version,
                        name,
                    )
                applied.append(name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(72150001)")
    return applied


@dataclass(frozen=True, slots=True)
class PostResult:
    ping_id: str
    status: str  # in_progress, sold, unsold
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


@dataclass(frozen=True, slots=True)
class PostTotals:
    """A post's final result: the sum over its sales (one for an exclusive lead)."""

    price_cents: int
    payout_cents: int


@dataclass(frozen=True, slots=True)
class SaleRow:
    ping_id: str
    seller_id: str
    buyer_id: str
    vertical: str
    price_cents: int
    payout_cents: int
    bid_id: str | None
    buyer_lead_id: str | None
    created_at: datetime
    sale_seq: int = 1
    phone_hash: bytes | None = None
    email_hash: bytes | None = None


# One sale in one statement (one round trip, atomic on its own): the post's claim is
# locked first, so a claim declared interrupted meanwhile (its seller may have been told
# "unsold") gains no sale; the sale goes in only while the claim is in progress, and a
# taken slot (the same sequence number or buyer) inserts nothing; with $13 the post's
# "sold" result is written with it. ``sold`` says whether the sale went in.
_RECORD_SALE = """
WITH claim AS (
    SELECT status FROM posts WHERE ping_id = $1 FOR UPDATE
), sale AS (
    INSERT INTO sales (ping_id, sale_seq, seller_id, buyer_id, vertical, price_cents,
                       payout_cents, bid_id, buyer_lead_id, created_at, phone_hash, email_hash)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12
    FROM claim WHERE status = 'in_progress'
    ON CONFLICT DO NOTHING
    RETURNING 1
), closed AS (
    UPDATE posts SET status = 'sold', price_cents = $14, payout_cents = $15, reason = NULL,
                     finished_at = $16
    WHERE ping_id = $1 AND $13 AND EXISTS (SELECT 1 FROM sale)
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM sale) AS sold
"""


# Closing a claim whose walk is gone (Store.close_interrupted): lock it while in progress
# (only a given process's, made at a given moment, when those are given), then, in the
# next statement, close it with what its committed sales add up to.
_LOCK_CLAIM = """
SELECT true FROM posts
WHERE ping_id = $1 AND status = 'in_progress'
  AND ($2::text IS NULL OR claimed_by = $2)
  AND ($3::timestamptz IS NULL OR claimed_at = $3)
FOR UPDATE
"""
_CLOSE_CLAIM = """
UPDATE posts p SET status = CASE WHEN s.n > 0 THEN 'sold' ELSE 'unsold' END,
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
    ``since``, as Store.close_interrupted does: for a process known to be dead (a worker
    its supervisor saw exit), so nothing of it is walking them any more. Returns how many
    it closed."""
    ping_ids = await conn.fetch(
        "SELECT ping_id FROM posts"
        " WHERE claimed_at >= $2 AND claimed_by = $1 AND status = 'in_progress'",
        owner,
        since,
    )
    closed = 0
    for row in ping_ids:
        if await _close_claim(conn, row["ping_id"], reason, finished_at, owner):
            closed += 1
    return closed


class SaleConflict(Exception):
    """The sale slot was already taken, or the post's claim is no longer held."""


P = ParamSpec("P")
R = TypeVar("R")


def _bounded(
    method: Callable[Concatenate[Store, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Store, P], Coroutine[Any, Any, R]]:
    """A request-path ledger call that gives up after ``Store.timeout_s``: a frozen (not
    refusing) database must become a 503 near tmax, not a 10-second hang."""

    async def call(store: Store, /, *args: P.args, **kwargs: P.kwargs) -> R:
        # The call runs as its own task so that giving up is immediate: cancelling a query
        # on a frozen server waits for the server, and the caller must not.
        task = asyncio.ensure_future(method(store, *args, **kwargs))
        try:
            done, _ = await asyncio.wait({task}, timeout=store.timeout_s)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            raise TimeoutError(f"{method.__name__} took over {store.timeout_s:g} s")
        return task.result()

    call.__name__, call.__doc__ = method.__name__, method.__doc__
    return call


class Store:
    def __init__(
        self, pool: asyncpg.Pool, timeout_s: float = 1.0, owner: str | None = None
    ) -> None:
        self.pool = pool
        self.timeout_s = timeout_s
        # This process in the post claims it makes (posts.claimed_by); unique per process
        # start (serve --workers names each worker's, to close its claims when it dies).
        self.owner = owner or uuid.uuid4().hex

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

    # -- pings ---------------------------------------------------------------------------

    @_bounded
    async def fetch_ping(self, ping_id: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            "SELECT * FROM pings WHERE ping_id = $1", uuid.UUID(ping_id)
        )

    @_bounded
    async def claim_external_id(self, seller_id: str, external_id: str, ping_id: str) -> str:
        """Bind ``external_id`` to ``ping_id`` unless already bound; returns the bound ping id."""
        owner = uuid.UUID(ping_id)
        async with self.pool.acquire() as conn:
            # Two statements, not one: after waiting on a concurrent insert of the same key,
            # the SELECT needs a fresh snapshot to see the winner's row.
            won = await conn.fetchval(
                "INSERT INTO external_ids (seller_id, external_id, ping_id) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING ping_id",
                seller_id,
                external_id,
                owner,
            )
            if won is not None:
                return ping_id
            bound = await conn.fetchval(
                "SELECT ping_id FROM external_ids WHERE seller_id = $1 AND external_id = $2",
                seller_id,
                external_id,
            )
        return str(bound)

    # -- posts and sales -----------------------------------------------------------------

    @_bounded
    async def claim_post(
        self, ping_id: str, seller_id: str, now: datetime, lead_digest: bytes | None = None
    ) -> PostResult | None:
        """Claim the right to post this ping with the lead of ``lead_digest``. None:
        claimed by us. Else the existing claim."""
        pid = uuid.UUID(ping_id)
        async with self.pool.acquire() as conn:
            claimed = await conn.fetchval(
                "INSERT INTO posts (ping_id, seller_id, status, claimed_at, claimed_by,"
                " lead_digest) VALUES ($1, $2, 'in_progress', $3, $4, $5)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                pid,
                seller_id,
                now,
                self.owner,
                lead_digest,
            )
            if claimed:
                return None
            row = await conn.fetchrow("SELECT * FROM posts WHERE ping_id = $1", pid)
        assert row is not None
        return _post_result(row)

    @_bounded
    async def fetch_post(self, ping_id: str) -> PostResult | None:
        row = await self.pool.fetchrow(_FETCH_POST, uuid.UUID(ping_id), OWNER_SILENT_S)
        return _post_result(row) if row is not None else None

    @_bounded
    async def record_sale(
        self, sale: SaleRow, finished_at: datetime, totals: PostTotals | None
    ) -> None:
        """Commit one sale, and with ``totals`` the post's final "sold" result in the same
        statement; raise SaleConflict if the slot is taken or the claim was given up."""
        row = await self.pool.fetchrow(
            _RECORD_SALE,
            uuid.UUID(sale.ping_id),
            sale.sale_seq,
            sale.seller_id,
            sale.buyer_id,
            sale.vertical,
            sale.price_cents,
            sale.payout_cents,
            sale.bid_id,
            sale.buyer_lead_id,
            sale.created_at,
            sale.phone_hash,
            sale.email_hash,
            totals is not None,
            totals.price_cents if totals is not None else None,
            totals.payout_cents if totals is not None else None,
            finished_at,
        )
        if row is None or not row["sold"]:
            raise SaleConflict(sale.ping_id)

    @_bounded
    async def finish_sold(self, ping_id: str, totals: PostTotals, finished_at: datetime) -> None:
        """Close a shared lead's post after its walk: sold, with the sums of its sales."""
        await self.pool.execute(
            "UPDATE posts SET status = 'sold', price_cents = $2, payout_cents = $3,"
            " reason = NULL, finished_at = $4 WHERE ping_id = $1 AND status = 'in_progress'",
            uuid.UUID(ping_id),
            totals.price_cents,
            totals.payout_cents,
            finished_at,
        )

    @_bounded
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

    # -- caps ----------------------------------------------------------------------------

    @_bounded
    async def reserve_caps(
        self, buyer_id: str, windows: Sequence[CapWindow], price_cents: int
    ) -> str | None:
        """Count one sale at ``price_cents`` in every window, atomically and only if no
        limit breaks; returns None when reserved, else the cap that is reached. One
        round trip (the ledger's ``reserve_cap_windows``, migration 0005)."""
        limits = [w.limit for w in windows]
        reached = await self.pool.fetchval(
            "SELECT reserve_cap_windows($1, $2::text[], $3::timestamptz[], $4::integer[],"
            " $5::bigint[], $6)",
            buyer_id,
            [limit.period for limit in limits],
            [w.start for w in windows],
            [limit.max_count for limit in limits],
            [limit.max_spend_cents for limit in limits],
            price_cents,
        )
        return f"{limits[reached - 1].describe()} reached" if reached else None

    @_bounded
    async def release_caps(
        self, buyer_id: str, windows: Sequence[CapWindow], price_cents: int
    ) -> None:
        """Take back a reserved sale from every window, in one statement."""
        await self.pool.execute(
            "UPDATE cap_counters c SET sales = c.sales - 1, spent_cents = c.spent_cents - $4"
            " FROM unnest($2::text[], $3::timestamptz[]) AS w (period, period_start)"
            " WHERE c.buyer_id = $1 AND c.period = w.period AND c.period_start = w.period_start",
            buyer_id,
            [w.limit.period for w in windows],
            [w.start for w in windows],
            price_cents,
        )

    async def cap_counts(self, since: datetime) -> dict[tuple[str, str, datetime], tuple[int, int]]:
        rows = await self.pool.fetch(
            "SELECT buyer_id, period, period_start, sales, spent_cents FROM cap_counters"
            " WHERE period_start >= $1",
            since,
        )
        return {
            (r["buyer_id"], r["period"], r["period_start"]): (r["sales"], r["spent_cents"])
            for r in rows
        }

    # -- tiers and duplicates ------------------------------------------------------------

    @_bounded
    async def last_winners(self, vertical: str) -> dict[int, str]:
        rows = await self.pool.fetch(
            "SELECT tier, last_buyer_id FROM tier_state WHERE vertical = $1", vertical
        )
        return {r["tier"]: r["last_buyer_id"] for r in rows}

    @_bounded
    async def set_last_winner(self, vertical: str, tier: int, buyer_id: str, at: datetime) -> None:
        await self.pool.execute(
            "INSERT INTO tier_state (vertical, tier, last_buyer_id, updated_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (vertical, tier) DO UPDATE"
            " SET last_buyer_id = EXCLUDED.last_buyer_id, updated_at = EXCLUDED.updated_at",
            vertical,
            tier,
            buyer_id,
            at,
        )

    @_bounded
    async def recent_buyers_of(
        self, hashes: Sequence[bytes], since: datetime
    ) -> list[asyncpg.Record]:
        """Sales since ``since`` of a lead with any of these contact hashes."""
        if not hashes:
            return []
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT buyer_id, vertical, created_at FROM sales"
            " WHERE (phone_hash = ANY($1::bytea[]) OR email_hash = ANY($1::bytea[]))"
            " AND created_at >= $2",
            list(hashes),
            since,
        )
        return rows

    # -- returns -------------------------------------------------------------------------

    @_bounded
    async def sale_for_return(self, ping_id: str, buyer_id: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            "SELECT s.*, r.return_id, r.created_at AS returned_at FROM sales s"
            " LEFT JOIN returns r ON r.sale_id = s.sale_id"
            " WHERE s.ping_id = $1 AND s.buyer_id = $2",
            uuid.UUID(ping_id),
            buyer_id,
        )

    @_bounded
    async def record_return(self, sale: asyncpg.Record, reason: str, at: datetime) -> bool:
        """Record the credit and the payout reversal; False if already returned."""
        done = await self.pool.fetchval(
            "INSERT INTO returns (sale_id, ping_id, buyer_id, seller_id, vertical, credit_cents,"
            " payout_reversal_cents, reason, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (sale_id) DO NOTHING RETURNING return_id",
            sale["sale_id"],
            sale["ping_id"],
            sale["buyer_id"],
            sale["seller_id"],
            sale["vertical"],
            sale["price_cents"],
            sale["payout_cents"],
            reason,
            at,
        )
        return done is not None

    @_bounded
    async def finish_unsold(self, ping_id: str, reason: str, finished_at: datetime) -> bool:
        """Close an in-progress post as unsold; False if it was no longer in progress."""
        done = await self.pool.execute(
            "UPDATE posts SET status = $2, reason = $3, finished_at = $4"
            " WHERE ping_id = $1 AND status = 'in_progress'",
            uuid.UUID(ping_id),
            PostStatus.UNSOLD.value,
            reason,
            finished_at,
        )
        return bool(done == "UPDATE 1")

    # -- operator reads ------------------------------------------------------------------

    async def auction_story(self, ping_id: str) -> dict[str, Any] | None:
        pid = uuid.UUID(ping_id)
        async with self.pool.acquire() as conn:
            ping = await conn.fetchrow("SELECT * FROM pings WHERE ping_id = $1", pid)
            if ping is None:
                return None
            bids = await conn.fetch(
                "SELECT buyer_id, outcome, price_cents, latency_us, rank, reason"
                " FROM bid_outcomes WHERE ping_id = $1"
                " ORDER BY rank NULLS LAST, buyer_id",
                pid,
            )
            attempts = await conn.fetch(
                "SELECT attempt, buyer_id, outcome, price_cents, latency_us, reason,"
                " buyer_lead_id, created_at FROM post_attempts WHERE ping_id = $1"
                " ORDER BY attempt",
                pid,
            )
            sales = await conn.fetch(
                "SELECT sale_seq, buyer_id, price_cents, payout_cents, bid_id,"
                " buyer_lead_id, created_at FROM sales WHERE ping_id = $1 ORDER BY sale_seq",
                pid,
            )
            post = await conn.fetchrow("SELECT * FROM posts WHERE ping_id = $1", pid)
        return {
            "ping": dict(ping),
            "bids": [dict(r) for r in bids],
            "attempts": [dict(r) for r in attempts],
            "sales": [dict(r) for r in sales],
            "post": dict(post) if post is not None else None,
        }

    async def buyer_report(self, since: datetime, until: datetime) -> Sequence[asyncpg.Record]:
        """Per-buyer totals; ``since`` and ``until`` must be whole hours (the rollups')."""
        rows: Sequence[asyncpg.Record] = await self.pool.fetch(_BUYER_REPORT, since, until)
        return rows

    async def rebuild_rollups(self) -> None:
        """Recompute every hourly rollup from the ledger rows (after a bulk load or a
        restore); the batch writer keeps them current otherwise."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "TRUNCATE buyer_hourly, buyer_latency_hourly, seller_hourly", timeout=3600
            )
            for table, statement in REBUILD_SQL.items():
                await conn.execute(statement, *ROLLUP_ARGS.get(table, ()), timeout=3600)

    async def buyer_latency_buckets(
        self, since: datetime, until: datetime
    ) -> dict[str, dict[int, int]]:
        found: dict[str, dict[int, int]] = {}
        for r in await self.pool.fetch(_BUYER_LATENCY, since, until):
            found.setdefault(r["buyer_id"], {})[r["bucket"]] = r["n"]
        return found

    async def seller_report(self, since: datetime, until: datetime) -> Sequence[asyncpg.Record]:
        rows: Sequence[asyncpg.Record] = await self.pool.fetch(_SELLER_REPORT, since, until)
        return rows


# How long a process may go without its heartbeat (written every second) before its post
# claims count as abandoned.
OWNER_SILENT_S = 5.0
_FETCH_POST = """
SELECT p.*, p.claimed_by IS NOT NULL
            AND (h.seen_at IS NULL OR h.seen_at < now() - make_interval(secs => $2))
            AS owner_silent
FROM posts p LEFT JOIN exchange_processes h ON h.owner = p.claimed_by
WHERE p.ping_id = $1
"""


def _post_result(row: asyncpg.Record) -> PostResult:
    return PostResult(
        ping_id=str(row["ping_id"]),
        status=row["status"],
        price_cents=row["price_cents"],
        payout_cents=row["payout_cents"],
        reason=row["reason"],
        claimed_at=row["claimed_at"],
        claimed_by=row["claimed_by"],
        owner_silent=row.get("owner_silent", False),
        lead_digest=row.get("lead_digest"),
    )


_BUYER_REPORT = """
WITH h AS (
    SELECT buyer_id, sum(pings)::bigint AS pings, sum(bids)::bigint AS bids,
           sum(wins)::bigint AS wins, sum(timeouts)::bigint AS timeouts,
           sum(errors)::bigint AS errors, sum(excluded)::bigint AS excluded,
           sum(posts)::bigint AS posts, sum(accepted)::bigint AS accepted
    FROM buyer_hourly WHERE hour >= $1 AND hour < $2 GROUP BY buyer_id
), s AS (
    SELECT buyer_id, count(*) AS sales, sum(price_cents)::bigint AS revenue_cents
    FROM sales WHERE created_at >= $1 AND created_at < $2 GROUP BY buyer_id
), r AS (
    SELECT buyer_id, count(*) AS returns, sum(credit_cents)::bigint AS credit_cents
    FROM returns WHERE created_at >= $1 AND created_at < $2 GROUP BY buyer_id
)
SELECT coalesce(h.buyer_id, s.buyer_id, r.buyer_id) AS buyer_id,
       coalesce(h.pings, 0) AS pings, coalesce(h.bids, 0) AS bids, coalesce(h.wins, 0) AS wins,
       coalesce(h.timeouts, 0) AS timeouts, coalesce(h.errors, 0) AS errors,
       coalesce(h.excluded, 0) AS excluded,
       coalesce(h.posts, 0) AS posts, coalesce(h.accepted, 0) AS accepted,
       coalesce(s.sales, 0) AS sales, coalesce(s.revenue_cents, 0) AS revenue_cents,
       coalesce(r.returns, 0) AS returns, coalesce(r.credit_cents, 0) AS credit_cents
FROM h FULL JOIN s ON s.buyer_id = h.buyer_id
       FULL JOIN r ON r.buyer_id = coalesce(h.buyer_id, s.buyer_id)
ORDER BY 1
"""

_BUYER_LATENCY = """
SELECT buyer_id, bucket, sum(n)::bigint AS n FROM buyer_latency_hourly
WHERE hour >= $1 AND hour < $2 GROUP BY buyer_id, bucket
"""

_SELLER_REPORT = """
WITH h AS (
    SELECT seller_id, sum(pings)::bigint AS pings, sum(bids)::bigint AS bids
    FROM seller_hourly WHERE hour >= $1 AND hour < $2 GROUP BY seller_id
), s AS (
    SELECT seller_id, count(*) AS sales, sum(price_cents)::bigint AS revenue_cents,
           sum(payout_cents)::bigint AS payout_cents
    FROM sales WHERE created_at >= $1 AND created_at < $2 GROUP BY seller_id
), o AS (
    SELECT seller_id, count(*) AS posts FROM posts
    WHERE claimed_at >= $1 AND claimed_at < $2 GROUP BY seller_id
), r AS (
    SELECT seller_id, count(*) AS returns, sum(payout_reversal_cents)::bigint AS reversed_cents
    FROM returns WHERE created_at >= $1 AND created_at < $2 GROUP BY seller_id
)
SELECT coalesce(h.seller_id, s.seller_id, o.seller_id, r.seller_id) AS seller_id,
       coalesce(h.pings, 0) AS pings, coalesce(h.bids, 0) AS bids,
       coalesce(o.posts, 0) AS posts, coalesce(s.sales, 0) AS sales,
       coalesce(s.revenue_cents, 0) AS revenue_cents,
       coalesce(s.payout_cents, 0) AS payout_cents,
       coalesce(r.returns, 0) AS returns, coalesce(r.reversed_cents, 0) AS reversed_cents
FROM h FULL JOIN s ON s.seller_id = h.seller_id
       FULL JOIN o ON o.seller_id = coalesce(h.seller_id, s.seller_id)
       FULL JOIN r ON r.seller_id = coalesce(h.seller_id, s.seller_id, o.seller_id)
ORDER BY 1
"""
