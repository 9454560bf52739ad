"""Recording a sale (exchange.ledger.sales.Sales.record_sale) against a real ledger: it goes in
only while its post's claim is held, never twice into one slot, and writes the post's
"sold" result with the last sale, all in one statement. And what a retried post does
with a claim whose walk is gone."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from exchange.ledger import sales as sales_module
from exchange.ledger.sales import PostTotals, SaleConflict, SaleRow
from exchange.ledger.store import Store
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import (
    FULL_LEAD,
    Exchange,
    make_config,
    realtime_buyer,
    running_exchange,
    until_a_statement_waits_on_a_lock,
)

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _sale(ping_id: str, buyer_id: str = "b1", seq: int = 1, price: int = 2000) -> SaleRow:
    return SaleRow(
        ping_id=ping_id, seller_id="s1", buyer_id=buyer_id, vertical="auto", price_cents=price,
        payout_cents=price * 85 // 100, bid_id="bid-7", buyer_lead_id="lead-9", created_at=NOW,
        sale_seq=seq, phone_hash=b"\x01" * 32, email_hash=None,
    )  # fmt: skip


async def _claimed(store: Store) -> str:
    ping_id = str(uuid.uuid4())
    assert await store.claim_post(ping_id, "s1", NOW) is None
    return ping_id


async def _sales(store: Store, ping_id: str) -> list[asyncpg.Record]:
    return list(
        await store.pool.fetch(
            "SELECT sale_seq, buyer_id, price_cents, payout_cents, bid_id, buyer_lead_id,"
            " phone_hash, email_hash FROM sales WHERE ping_id = $1 ORDER BY sale_seq",
            uuid.UUID(ping_id),
        )
    )


async def test_the_last_sale_closes_the_post_as_sold_with_its_totals(store: Store) -> None:
    ping_id = await _claimed(store)
    await store.record_sale(_sale(ping_id), NOW, PostTotals(2000, 1700))
    post = await store.fetch_post(ping_id)
    assert post is not None
    assert (post.status, post.price_cents, post.payout_cents) == ("sold", 2000, 1700)
    (sale,) = await _sales(store, ping_id)
    assert tuple(sale) == (1, "b1", 2000, 1700, "bid-7", "lead-9", b"\x01" * 32, None)


async def test_a_shared_lead_stays_in_progress_until_its_last_sale(store: Store) -> None:
    ping_id = await _claimed(store)
    await store.record_sale(_sale(ping_id, "b1", 1, 2000), NOW, None)
    post = await store.fetch_post(ping_id)
    assert post is not None and post.status == "in_progress"
    await store.record_sale(_sale(ping_id, "b2", 2, 1500), NOW, PostTotals(3500, 2975))
    post = await store.fetch_post(ping_id)
    assert post is not None
    assert (post.status, post.price_cents, post.payout_cents) == ("sold", 3500, 2975)
    assert [(s["sale_seq"], s["buyer_id"]) for s in await _sales(store, ping_id)] == [
        (1, "b1"),
        (2, "b2"),
    ]


@pytest.mark.parametrize("taken", ["sequence number", "buyer"])
async def test_a_taken_sale_slot_is_a_conflict_and_changes_nothing(
    store: Store, taken: str
) -> None:
    ping_id = await _claimed(store)
    await store.record_sale(_sale(ping_id, "b1", 1), NOW, None)
    again = _sale(ping_id, "b2", 1) if taken == "sequence number" else _sale(ping_id, "b1", 2)
    with pytest.raises(SaleConflict):
        await store.record_sale(again, NOW, PostTotals(4000, 3400))
    post = await store.fetch_post(ping_id)
    assert post is not None and post.status == "in_progress"  # not closed by the refused sale
    assert len(await _sales(store, ping_id)) == 1


async def test_a_claim_closed_as_interrupted_gains_no_sale(store: Store) -> None:
    ping_id = await _claimed(store)
    await store.close_interrupted(ping_id, "post_interrupted", NOW)
    with pytest.raises(SaleConflict):
        await store.record_sale(_sale(ping_id), NOW, PostTotals(2000, 1700))
    post = await store.fetch_post(ping_id)
    assert post is not None
    assert (post.status, post.reason, post.price_cents) == ("unsold", "post_interrupted", None)
    assert await _sales(store, ping_id) == []


async def test_a_sale_without_a_claim_is_a_conflict(store: Store) -> None:
    ping_id = str(uuid.uuid4())
    with pytest.raises(SaleConflict):
        await store.record_sale(_sale(ping_id), NOW, PostTotals(2000, 1700))
    assert await _sales(store, ping_id) == []


async def test_a_claim_closed_while_the_sale_waits_for_its_lock_gains_no_sale(
    store: Store, database_url: str
) -> None:
    """The closer holds the claim's row when the sale arrives: the sale waits, then sees
    the claim closed, and inserts nothing."""
    ping_id = await _claimed(store)
    closer = await asyncpg.connect(database_url)
    try:
        held = closer.transaction()
        await held.start()
        await closer.execute(
            "UPDATE posts SET status = 'unsold', reason = 'post_interrupted', finished_at = $2"
            " WHERE ping_id = $1",
            uuid.UUID(ping_id),
            NOW,
        )
        sale = asyncio.ensure_future(store.record_sale(_sale(ping_id), NOW, PostTotals(2000, 1700)))
        await asyncio.sleep(0.2)
        assert not sale.done()  # waiting on the claim's lock
        await held.commit()
        with pytest.raises(SaleConflict):
            await sale
    finally:
        await closer.close()
    post = await store.fetch_post(ping_id)
    assert post is not None and post.status == "unsold"
    assert await _sales(store, ping_id) == []


# -- a claim whose walk is gone ------------------------------------------------------------


async def _leave_claim(ex: Exchange, ping_id: str, left_by: str) -> None:
    if left_by == "a failed walk of this process":  # its claim, no walk of it running
        assert await ex.ctx.store.claim_post(ping_id, "acme-media", ex.ctx.clock.now()) is None
        return
    if left_by == "a process silent for 10 s":
        await ex.ctx.store.pool.execute(
            "INSERT INTO exchange_processes (owner, seen_at)"
            " VALUES ('dead-process', now() - interval '10 seconds')"
        )
    await ex.ctx.store.pool.execute(
        "INSERT INTO posts (ping_id, seller_id, status, claimed_at, claimed_by)"
        " VALUES ($1, 'acme-media', 'in_progress', now(), 'dead-process')",
        uuid.UUID(ping_id),
    )


@pytest.mark.parametrize(
    "left_by",
    ["a failed walk of this process", "a process silent for 10 s", "a process never seen"],
)
async def test_a_post_claim_whose_walk_is_gone_is_closed_at_once(
    database_url: str, left_by: str
) -> None:
    """A claim whose walk is gone: this process's walk failed midway (its ledger went
    away), or the claiming process died (kill -9, a lost machine) and its heartbeat has
    been silent for OWNER_SILENT_S, or it has none. The seller's retry closes the claim
    at once as interrupted instead of waiting for it to age out (post_deadline_ms + 5 s,
    20 s here), without walking the lead again."""
    specs = [SimulatedBuyerSpec("steady", bid_cents=(2000, 2000), latency_ms=(1, 3))]
    async with BuyerSimulator(specs, record=False) as sim:
        config = make_config([realtime_buyer(sim, "steady")])
        async with running_exchange(config, database_url) as ex:
            bid = await ex.ping()
            await _leave_claim(ex, bid["ping_id"], left_by)
            started = asyncio.get_running_loop().time()
            status, answer, _ = await ex.call(
                "POST", "/v1/post", {"ping_id": bid["ping_id"], "lead": FULL_LEAD}
            )
            elapsed = asyncio.get_running_loop().time() - started
            posted_to_buyer = sim.counters("steady").posts
    assert status == 200, answer
    assert answer["status"] == "unsold" and answer["reason"] == "post_interrupted"
    assert elapsed < 2.0, f"{elapsed:.1f} s"
    assert posted_to_buyer == 0  # the lead was not walked twice


async def test_a_post_claimed_by_another_process_is_waited_for(database_url: str) -> None:
    specs = [SimulatedBuyerSpec("steady", bid_cents=(2000, 2000), latency_ms=(1, 3))]
    async with BuyerSimulator(specs, record=False) as sim:
        config = make_config([realtime_buyer(sim, "steady")])
        async with running_exchange(config, database_url) as ex:
            bid = await ex.ping()
            # A live process: its heartbeat is fresh.
            await ex.ctx.store.pool.execute(
                "INSERT INTO exchange_processes (owner) VALUES ('another-process')"
            )
            await ex.ctx.store.pool.execute(
                "INSERT INTO posts (ping_id, seller_id, status, claimed_at, claimed_by)"
                " VALUES ($1, 'acme-media', 'in_progress', now(), 'another-process')",
                uuid.UUID(bid["ping_id"]),
            )
            post = asyncio.ensure_future(
                ex.call("POST", "/v1/post", {"ping_id": bid["ping_id"], "lead": FULL_LEAD})
            )
            done, _ = await asyncio.wait({post}, timeout=1.0)
            post.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await post
            claim = await ex.ctx.store.fetch_post(bid["ping_id"])
            # Let the handler's wait end now rather than when the claim ages out.
            now = ex.ctx.clock.now()
            await ex.ctx.store.close_interrupted(bid["ping_id"], "post_interrupted", now)
    assert not done  # still waiting on the other process's walk
    assert claim is not None and claim.status == "in_progress"


async def test_a_running_exchange_writes_its_heartbeat_and_removes_it_when_it_stops(
    database_url: str,
) -> None:
    config = make_config([])
    async with running_exchange(config, database_url) as ex:
        owner = ex.ctx.store.owner
        first = await ex.ctx.store.pool.fetchval(
            "SELECT seen_at FROM exchange_processes WHERE owner = $1", owner
        )
        await asyncio.sleep(1.5)
        later = await ex.ctx.store.pool.fetchval(
            "SELECT seen_at FROM exchange_processes WHERE owner = $1", owner
        )
    conn = await asyncpg.connect(database_url)
    try:
        after = await conn.fetchval(
            "SELECT count(*) FROM exchange_processes WHERE owner = $1", owner
        )
    finally:
        await conn.close()
    assert first is not None and later > first
    assert after == 0


async def test_a_walk_failed_by_the_ledger_has_its_claim_closed_so_another_process_answers(
    database_url: str,
) -> None:
    """A walk that fails midway because its ledger went away (here: its sale waits on a
    locked table past db_timeout_ms) leaves its claim in progress. Its process closes the
    claim as soon as the ledger takes the write again, so the seller's retry reaching
    another process answers at once, not after the claim ages out (post_deadline_ms + 5 s,
    20 s here)."""
    specs = [SimulatedBuyerSpec("steady", bid_cents=(2000, 2000), latency_ms=(1, 3))]
    async with BuyerSimulator(specs, record=False) as sim:
        config = make_config([realtime_buyer(sim, "steady")], exchange={"db_timeout_ms": 300})
        async with (
            running_exchange(config, database_url) as first,
            running_exchange(config, database_url) as second,
        ):
            bid = await first.ping()
            ping_id = bid["ping_id"]
            locker = await asyncpg.connect(database_url)
            try:
                async with locker.transaction():
                    await locker.execute("LOCK TABLE sales IN ACCESS EXCLUSIVE MODE")
                    failed, _, _ = await first.call(
                        "POST", "/v1/post", {"ping_id": ping_id, "lead": FULL_LEAD}
                    )
                    left = await second.ctx.store.fetch_post(ping_id)
            finally:
                await locker.close()
            loop = asyncio.get_running_loop()
            started = loop.time()
            retry = second.call("POST", "/v1/post", {"ping_id": ping_id, "lead": FULL_LEAD})
            status, answer, _ = await asyncio.wait_for(retry, timeout=5.0)
            elapsed = loop.time() - started
            post = await second.ctx.store.fetch_post(ping_id)
            sales = await _sales(second.ctx.store, ping_id)
    assert failed == 503
    assert left is not None and left.status == "in_progress"
    assert left.claimed_by == first.ctx.store.owner != second.ctx.store.owner
    assert status == 200, answer
    assert elapsed < 3.0, f"{elapsed:.1f} s"
    # The ledger's answer: the sale waiting on the lock was called off (unsold,
    # interrupted), or committed before that (sold); either way the seller hears it.
    assert post is not None and answer["status"] == post.status
    if post.status == "unsold":
        assert answer["reason"] == "post_interrupted" and sales == []
    else:
        assert post.status == "sold" and len(sales) == 1


async def test_a_close_waiting_on_a_shared_leads_sale_in_flight_counts_that_sale(
    store: Store,
) -> None:
    """A claim is closed (its walk is gone) while a sale of a shared lead, not its last,
    still holds the claim's lock: the close waits for it and counts it. The post ends
    sold with that sale, never unsold beside a sale row."""
    ping_id = await _claimed(store)
    sale = _sale(ping_id)
    async with store.pool.acquire() as conn:
        # The sale statement in flight: the claim locked and the sale row written, not
        # yet committed.
        transaction = conn.transaction()
        await transaction.start()
        await conn.fetchrow(
            sales_module._RECORD_SALE, uuid.UUID(ping_id), sale.sale_seq, sale.seller_id,
            sale.buyer_id, sale.vertical, sale.price_cents, sale.payout_cents, sale.bid_id,
            sale.buyer_lead_id, sale.created_at, sale.phone_hash, sale.email_hash,
            sale.redirect_url, False, None, None, NOW,
        )  # fmt: skip
        closing = asyncio.ensure_future(store.close_interrupted(ping_id, "post_interrupted", NOW))
        await until_a_statement_waits_on_a_lock(store.pool, "the close")
        await transaction.commit()
        await closing
    post = await store.fetch_post(ping_id)
    assert post is not None
    assert (post.status, post.price_cents, post.payout_cents) == ("sold", 2000, 1700)
    assert len(await _sales(store, ping_id)) == 1
