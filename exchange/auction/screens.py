"""What a full lead is checked against before any buyer sees it: the vertical's
suppression lists, and who already has this person (the vertical's and each buyer's
duplicate windows). One ledger read each; used before a post's walk (exchange/api/
seller.py), by the walk (posting.py) and by a held lead's delivery (holds.py).

The duplicate check is read once, when a post starts; two offers of one person under way
at once both read no sale yet. So each offer where a person may be sold only once in a
window also reserves the person there first (``reserve_person``, exchange/ledger/
reservations.py), and gives it back when it did not sell."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from exchange.auction.context import ExchangeContext
from exchange.core.dedupe import ContactHashes, buyers_with_lead, sold_in_vertical
from exchange.core.ranking import BuyerRules
from exchange.core.suppression import lead_hashes
from exchange.ledger.faults import DATABASE_DOWN
from exchange.ledger.reservations import SOLD, Scope

# Why an offer is a duplicate where a window applies (reserve_person).
SOLD_LATELY = "the same person was sold there lately"
BEING_OFFERED = "the same person is being offered there by another lead"

# How long past its offer's own time a reservation may stay when the process holding it
# dies (a reservation given back or sold over goes at once or stays by its own rule).
RESERVATION_SLACK_S = 60.0


@dataclass(frozen=True, slots=True)
class DuplicateCheck:
    """What the ledger knows of this person: on a suppression list (its name), sold in
    the vertical lately, and to whom."""

    contacts: ContactHashes | None = None
    sold_in_vertical: bool = False
    buyers: dict[str, str] = field(default_factory=dict)
    suppressed_by: str | None = None


async def check_suppression(
    ctx: ExchangeContext, vertical: str, lead: dict[str, Any]
) -> str | None:
    """The first of the vertical's ``suppress`` lists holding one of the full lead's
    phones or emails (one indexed ledger read), or None."""
    lists = ctx.loaded.config.verticals[vertical].suppress
    key = ctx.loaded.settings.suppression_hash_key
    if not lists or not key:  # a vertical with lists has a key (exchange/config.py)
        return None
    hashes = lead_hashes(lead, ctx.loaded.schemas[vertical], key.encode())
    return await ctx.store.suppressed_in(hashes, lists)


async def check_duplicates(
    ctx: ExchangeContext,
    vertical: str,
    contacts: ContactHashes | None,
    now: datetime,
    suppressed_by: str | None = None,
) -> DuplicateCheck:
    """One ledger read covering the vertical's window and every buyer's window; none for
    a suppressed lead, which no buyer is offered."""
    if suppressed_by is not None:
        return DuplicateCheck(contacts, suppressed_by=suppressed_by)
    if contacts is None or not contacts.values():
        return DuplicateCheck(contacts)
    vertical_days = ctx.loaded.config.verticals[vertical].dedupe_days
    buyer_days = {
        b.buyer_id: b.dedupe_days for b in ctx.by_vertical.get(vertical, ()) if b.dedupe_days
    }
    longest = max([vertical_days, *buyer_days.values()])
    if not longest:
        return DuplicateCheck(contacts)
    past = await ctx.store.recent_buyers_of(contacts.values(), now - timedelta(days=longest))
    return DuplicateCheck(
        contacts,
        sold_in_vertical(past, vertical, vertical_days, now),
        buyers_with_lead(past, buyer_days, now),
    )


def buyer_scope(rules: BuyerRules | None, now: datetime) -> list[Scope]:
    """The buyer's duplicate window as a reservation scope; none without a window."""
    if rules is None or not rules.dedupe_days:
        return []
    return [Scope.buyer(rules.buyer_id, now - timedelta(days=rules.dedupe_days))]


def vertical_scope(ctx: ExchangeContext, vertical: str, now: datetime) -> list[Scope]:
    """The vertical's duplicate window as a reservation scope; none without a window."""
    days = ctx.loaded.config.verticals[vertical].dedupe_days
    return [Scope.of_vertical(vertical, now - timedelta(days=days))] if days else []


async def reserve_person(
    ctx: ExchangeContext,
    ping_id: str,
    contacts: ContactHashes | None,
    scopes: list[Scope],
    busy_s: float,
) -> str | None:
    """Reserve the lead's person in ``scopes`` for an offer taking up to ``busy_s``:
    None when reserved (or there is nothing to reserve), else why the offer is a
    duplicate there (sold lately, or being offered by another lead now)."""
    hashes = contacts.values() if contacts is not None else []
    if not scopes or not hashes:
        return None
    now = ctx.clock.now()
    until = now + timedelta(seconds=max(0.0, busy_s) + RESERVATION_SLACK_S)
    found = await ctx.store.reserve_contacts(scopes, hashes, ping_id, until, now)
    if found is None:
        return None
    if found == SOLD:
        return SOLD_LATELY
    return BEING_OFFERED


async def release_person(ctx: ExchangeContext, ping_id: str, scopes: list[Scope]) -> None:
    """Give back what ``reserve_person`` took for an offer that did not sell. With the
    database away it stays, and runs out by itself at its ``until``."""
    if scopes:
        with contextlib.suppress(*DATABASE_DOWN):
            await ctx.store.release_contacts(scopes, ping_id)
