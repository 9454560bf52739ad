"""Finding a ping wherever it is: running in this process, in its memory, or in the
ledger (another process's, perhaps still in that process's batch queue); and running one
as this process's in-flight auction, so a concurrent retry waits on it."""

from __future__ import annotations

import asyncio

from exchange.auction.context import ExchangeContext
from exchange.auction.pingcache import PingRecord, tree_from_ledger
from exchange.auction.pinging import PingRequest, run_ping

# How often a request re-reads the ledger for another process's in-flight ping or post.
LOOKUP_RETRY_S = 0.05


async def find_ping(ctx: ExchangeContext, ping_id: str, wait_s: float = 0.0) -> PingRecord | None:
    """The ping's record from this process's memory, else from the ledger.

    Another process may still hold the ping in its batch queue; with ``wait_s`` the read is
    retried until that much time has passed.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + wait_s
    while True:
        inflight = ctx.inflight.ping(ping_id)
        if inflight is not None:
            return await asyncio.shield(inflight)
        record = ctx.pings.get(ping_id, ctx.clock.now())
        if record is not None:
            return record
        record = await _ping_from_ledger(ctx, ping_id)
        if record is not None or loop.time() >= give_up:
            return record
        await asyncio.sleep(LOOKUP_RETRY_S)


async def _ping_from_ledger(ctx: ExchangeContext, ping_id: str) -> PingRecord | None:
    row = await ctx.store.fetch_ping(ping_id)
    if row is None:
        return None
    return PingRecord(
        ping_id=row.ping_id,
        seller_id=row.seller_id,
        vertical=row.vertical,
        external_id=row.external_id,
        lead=row.lead,
        tree=tree_from_ledger(row.ping_tree),
        price_cents=row.price_cents,
        payout_cents=row.payout_cents,
        created_at=row.created_at,
        expires_at=row.expires_at,
        tmax_ms=row.tmax_ms,
    )


async def run_auction(ctx: ExchangeContext, request: PingRequest) -> PingRecord:
    """Run the auction as this process's in-flight one for its ping id: a concurrent
    request for the same ping (a post, a repeated external_id) waits on it."""
    future: asyncio.Future[PingRecord] = asyncio.get_running_loop().create_future()
    ctx.inflight.start_ping(request.ping_id, future)
    try:
        record = await run_ping(ctx, request)
        future.set_result(record)
        return record
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: waiters get it, no "never retrieved" warning
        raise
    finally:
        ctx.inflight.end_ping(request.ping_id)
