"""A person reserved against a second offer meanwhile (exchange/ledger/reservations.py),
against the real ledger: all of a lead's hashes in every scope or none, held against
other pings until given back or run out, and a sale in a scope's window refusing it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from exchange.ledger.reservations import HELD, SOLD, Scope
from exchange.ledger.store import Store

NOW = datetime.now(UTC)
PHONE, EMAIL, OTHER = b"p" * 32, b"e" * 32, b"o" * 32
LATER = NOW + timedelta(minutes=1)
WEEK_AGO = NOW - timedelta(days=7)


def ping() -> str:
    return str(uuid.uuid4())


async def held(store: Store) -> set[tuple[str, bytes, str]]:
    rows = await store.pool.fetch("SELECT scope, contact_hash, ping_id FROM contact_reservations")
    return {(r["scope"], bytes(r["contact_hash"]), str(r["ping_id"])) for r in rows}


async def test_a_person_is_held_for_one_ping_until_given_back(store: Store) -> None:
    buyer = [Scope.buyer("b1", WEEK_AGO)]
    first, second = ping(), ping()
    assert await store.reserve_contacts(buyer, [PHONE, EMAIL], first, LATER, NOW) is None
    assert await store.reserve_contacts(buyer, [PHONE], second, LATER, NOW) == HELD
    # The same ping asking again keeps it; another buyer's scope is free.
    assert await store.reserve_contacts(buyer, [EMAIL, PHONE], first, LATER, NOW) is None
    assert await store.reserve_contacts([Scope.buyer("b2", WEEK_AGO)], [PHONE], second,
                                        LATER, NOW) is None  # fmt: skip
    await store.release_contacts(buyer, first)
    assert await store.reserve_contacts(buyer, [PHONE], second, LATER, NOW) is None


async def test_a_refused_reservation_keeps_nothing_it_took(store: Store) -> None:
    scopes = [Scope.buyer("b1", WEEK_AGO), Scope.of_vertical("auto", WEEK_AGO)]
    first, second = ping(), ping()
    # The first holds the email in the vertical only.
    assert await store.reserve_contacts(scopes[1:], [EMAIL], first, LATER, NOW) is None
    # The second wants phone and email in both scopes: the email is held, so it gets none
    # (not the buyer's pairs, nor the phone in the vertical).
    assert await store.reserve_contacts(scopes, [PHONE, EMAIL], second, LATER, NOW) == HELD
    assert await held(store) == {("vertical:auto", EMAIL, first)}


async def test_a_reservation_whose_time_is_up_is_taken_over_and_swept(store: Store) -> None:
    scope = [Scope.buyer("b1", WEEK_AGO)]
    gone, fresh = ping(), ping()
    earlier = NOW - timedelta(seconds=1)
    assert await store.reserve_contacts(scope, [PHONE], gone, NOW, earlier) is None
    # Its process died: at NOW its time is up, and another offer takes the person.
    assert await store.reserve_contacts(scope, [PHONE], fresh, LATER, NOW) is None
    assert await held(store) == {("buyer:b1", PHONE, fresh)}
    assert await store.reserve_contacts(scope, [OTHER], gone, NOW, earlier) is None
    assert await store.sweep_contact_reservations(NOW) == 1
    assert await held(store) == {("buyer:b1", PHONE, fresh)}


async def test_a_sale_in_the_scopes_window_refuses_the_reservation(store: Store) -> None:
    await store.pool.execute(
        "INSERT INTO sales (ping_id, seller_id, buyer_id, vertical, price_cents, payout_cents,"
        " created_at, phone_hash) VALUES ($1, 's', 'b1', 'auto', 1000, 850, $2, $3)",
        uuid.UUID(ping()), NOW - timedelta(days=3), PHONE,
    )  # fmt: skip
    other = ping()
    # Sold to b1 three days ago: a duplicate within b1's week, and within the vertical's.
    assert await store.reserve_contacts([Scope.buyer("b1", WEEK_AGO)], [EMAIL, PHONE], other,
                                        LATER, NOW) == SOLD  # fmt: skip
    assert await store.reserve_contacts([Scope.of_vertical("auto", WEEK_AGO)], [PHONE], other,
                                        LATER, NOW) == SOLD  # fmt: skip
    # Not within a two-day window, not to another buyer, not in another vertical.
    two_days = NOW - timedelta(days=2)
    assert await store.reserve_contacts([Scope.buyer("b1", two_days)], [PHONE], other,
                                        LATER, NOW) is None  # fmt: skip
    assert await store.reserve_contacts([Scope.buyer("b2", WEEK_AGO)], [PHONE], other,
                                        LATER, NOW) is None  # fmt: skip
    assert await store.reserve_contacts([Scope.of_vertical("home", WEEK_AGO)], [PHONE], other,
                                        LATER, NOW) is None  # fmt: skip
    assert await store.reserve_contacts([Scope.buyer("b1", WEEK_AGO)], [EMAIL], other,
                                        LATER, NOW) is None  # fmt: skip
