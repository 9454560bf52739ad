"""Held leads in the ledger: one process at a time delivers a hold, a lease outlives a
dead process only so long, and a held lead is sold at most once, whatever races."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from exchange.core.holds import HeldBuyer, HoldState
from exchange.core.outcomes import ClaimStatus, UnsoldReason
from exchange.core.sealing import PiiKeyRing
from exchange.ledger.holds import NewHold
from exchange.ledger.sales import SaleRow
from exchange.ledger.store import Store

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
KEYS = PiiKeyRing(bytes(32))


def other_process(store: Store) -> Store:
    return Store(store.pool, store.timeout_s, owner=uuid.uuid4().hex)


async def held(store: Store, due: datetime = T0) -> str:
    """A lead whose post was claimed, then held (its post queued)."""
    ping_id = str(uuid.uuid4())
    assert await store.claim_post(ping_id, "acme-media", T0) is None
    hold = NewHold(
        ping_id=ping_id, seller_id="acme-media", vertical="auto_insurance",
        lead={"state": "CA"}, pii=KEYS.seal({"phone": "+14155552671"}, ping_id.encode()),
        buyers=(HeldBuyer("late", T0 + timedelta(hours=12)),), min_payout_cents=0,
        phone_hash=None, email_hash=None, first_attempt=1, held_at=T0,
        hold_until=T0 + timedelta(hours=12), next_check_at=due,
    )  # fmt: skip
    assert await store.hold_lead(hold)
    return ping_id


def sale_of(ping_id: str, buyer_id: str = "late") -> SaleRow:
    return SaleRow(ping_id, "acme-media", buyer_id, "auto_insurance", 1400, 1190, None, None, T0)


async def test_holding_turns_the_post_queued_and_only_an_in_progress_post_is_held(
    store: Store,
) -> None:
    ping_id = await held(store)
    post = await store.fetch_post(ping_id)
    assert post is not None and post.status is ClaimStatus.QUEUED
    # A queued post is no claim in progress: closing interrupted claims leaves it alone.
    assert not await store.close_interrupted(ping_id, UnsoldReason.INTERRUPTED, T0)
    hold = await store.fetch_hold(ping_id)
    assert hold is not None and hold.state is HoldState.HELD
    assert KEYS.open(hold.pii, ping_id.encode()) == {"phone": "+14155552671"}  # type: ignore[arg-type]


async def test_a_hold_not_yet_due_is_not_claimed(store: Store) -> None:
    await held(store, due=T0 + timedelta(hours=2))
    assert await store.claim_due_holds(T0 + timedelta(hours=1), T0 + LEASE) == []
    assert len(await store.claim_due_holds(T0 + timedelta(hours=2), T0 + LEASE)) == 1


async def test_two_processes_claiming_at_once_get_each_hold_once(store: Store) -> None:
    ping_ids = {await held(store) for _ in range(30)}
    processes = [other_process(store) for _ in range(4)]
    claims = await asyncio.gather(*(p.claim_due_holds(T0, T0 + LEASE, limit=30) for p in processes))
    claimed = [h.ping_id for batch in claims for h in batch]
    assert sorted(claimed) == sorted(ping_ids)  # every hold, each by one process only


async def test_a_claim_is_not_taken_over_before_its_lease_ends_and_is_after(store: Store) -> None:
    ping_id = await held(store)
    first, second = other_process(store), other_process(store)
    [mine] = await first.claim_due_holds(T0, T0 + LEASE)
    assert await second.claim_due_holds(T0 + LEASE - timedelta(seconds=1), T0 + 2 * LEASE) == []
    # The first process died mid-delivery: once its lease ends, another takes the hold...
    [theirs] = await second.claim_due_holds(T0 + LEASE, T0 + 2 * LEASE)
    assert theirs.ping_id == ping_id and theirs.claim_token != mine.claim_token
    # ...and whatever the first process does with its old claim counts for nothing.
    assert mine.claim_token is not None and theirs.claim_token is not None
    assert await first.note_hold_attempt(ping_id, mine.claim_token, "late") is None
    assert not await first.sell_held(sale_of(ping_id), mine.claim_token)
    assert await second.sell_held(sale_of(ping_id), theirs.claim_token)
    rows = await store.pool.fetchval("SELECT count(*) FROM sales WHERE ping_id = $1",
                                     uuid.UUID(ping_id))  # fmt: skip
    assert rows == 1


async def test_a_held_lead_sold_closes_its_post_sold_and_purges_its_pii(store: Store) -> None:
    ping_id = await held(store)
    [hold] = await store.claim_due_holds(T0, T0 + LEASE)
    assert hold.claim_token is not None
    assert await store.note_hold_attempt(ping_id, hold.claim_token, "late") == 1
    assert await store.sell_held(sale_of(ping_id), hold.claim_token)
    post = await store.fetch_post(ping_id)
    assert post is not None and post.status is ClaimStatus.SOLD
    assert (post.price_cents, post.payout_cents) == (1400, 1190)
    after = await store.fetch_hold(ping_id)
    assert after is not None and after.state is HoldState.SOLD and after.pii is None
    assert after.buyer_id == "late" and after.tried == ("late",)
    # Sold once: the same claim cannot sell it again, to this buyer or another.
    assert not await store.sell_held(sale_of(ping_id, "other"), hold.claim_token)
    assert await store.claim_due_holds(T0 + timedelta(days=1), T0 + timedelta(days=2)) == []


async def test_concurrent_sales_of_one_held_lead_make_one_sale(store: Store) -> None:
    ping_id = await held(store)
    [hold] = await store.claim_due_holds(T0, T0 + LEASE)
    assert hold.claim_token is not None
    token = hold.claim_token
    results = await asyncio.gather(
        *(store.sell_held(sale_of(ping_id, f"buyer-{i}"), token) for i in range(8))
    )
    assert sum(results) == 1
    rows = await store.pool.fetchval("SELECT count(*) FROM sales WHERE ping_id = $1",
                                     uuid.UUID(ping_id))  # fmt: skip
    assert rows == 1


async def test_an_expired_hold_ends_its_post_unsold_and_purges_its_pii(store: Store) -> None:
    ping_id = await held(store)
    [hold] = await store.claim_due_holds(T0, T0 + LEASE)
    assert hold.claim_token is not None
    assert await store.expire_hold(ping_id, hold.claim_token, UnsoldReason.HOLD_EXPIRED, T0)
    post = await store.fetch_post(ping_id)
    assert post is not None and post.status is ClaimStatus.UNSOLD
    assert post.reason == "hold_expired"
    after = await store.fetch_hold(ping_id)
    assert after is not None and after.state is HoldState.EXPIRED and after.pii is None
    assert not await store.sell_held(sale_of(ping_id), hold.claim_token)


async def test_a_released_hold_is_due_again_at_its_next_check(store: Store) -> None:
    ping_id = await held(store)
    [hold] = await store.claim_due_holds(T0, T0 + LEASE)
    assert hold.claim_token is not None
    later = T0 + timedelta(hours=3)
    assert await store.release_hold(ping_id, hold.claim_token, later)
    assert await store.claim_due_holds(T0 + timedelta(hours=1), later + LEASE) == []
    assert [h.ping_id for h in await store.claim_due_holds(later, later + LEASE)] == [ping_id]
    assert await store.held_counts() == {"auto_insurance": 1}
