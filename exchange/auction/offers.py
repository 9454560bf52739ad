"""Running the lead pool (SPEC section 10, docs/distribution.md): an unsold full lead
offered to its vertical's pool (its PII sealed), offers listed to a buyer as it may claim
them, a claim (the buyer's controls, its caps reserved, then the ledger's one conditional
UPDATE that only the first claimer wins), and the sweep that takes aged offers out.

The rules are exchange/core/offers.py's (terms, price decay, what a listing shows) and
exchange/core/ranking.py's ``screen`` (seller allow/deny, schedule, filters, duplicates,
caps): a claim is refused for exactly what would keep the buyer out of an auction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from exchange.auction.context import ExchangeContext
from exchange.auction.screens import (
    buyer_scope,
    check_suppression,
    release_person,
    reserve_person,
    vertical_scope,
)
from exchange.core.config import BuyerConfig, SellerConfig
from exchange.core.dedupe import ContactHashes, PastSale, buyers_with_lead, sold_in_vertical
from exchange.core.errors import Conflict, Forbidden, NotFound, NotReady
from exchange.core.money import dollars_json, payout_cents
from exchange.core.offers import offer_terms, poolable, sealing_context
from exchange.core.ranking import BuyerRules, Exclusion, screen
from exchange.core.scoring import score_lead
from exchange.core.sealing import SealingError
from exchange.core.suppression import lead_hashes
from exchange.ledger.faults import DATABASE_DOWN
from exchange.ledger.offers import OfferPosition, PoolOffer

log = structlog.get_logger("exchange.pool")

# How often each process takes aged offers out and refreshes the pool's gauges.
SWEEP_INTERVAL_S = 5.0
# A listing reads open offers in pages of LIST_PAGE, newest first, and looks at no more
# than LIST_SCAN_LIMIT of them per request; where it stopped is the next page's cursor.
LIST_PAGE = 500
LIST_SCAN_LIMIT = 5000
# How long a claim may take: a reservation of its person outlives it by the slack only
# if the process dies meanwhile (exchange/auction/screens.py).
CLAIM_BUSY_S = 5.0


def build_offer(
    ctx: ExchangeContext,
    ping_id: str,
    vertical: str,
    seller: SellerConfig,
    lead: Mapping[str, Any],
    contacts: ContactHashes | None = None,
    min_payout_cents: int = 0,
    sub_id: str | None = None,
) -> PoolOffer | None:
    """The pool offer of a full, validated lead, its PII sealed; None when the lead does
    not go to the pool (the seller does not allow it, the vertical has no pool on, no key
    to seal with, or the seller's minimum is above the pool's start price)."""
    config = ctx.loaded.config.verticals.get(vertical)
    keys = ctx.pii_keys
    if config is None or not seller.pool or keys is None:
        return None
    terms = offer_terms(config.pool, ctx.clock.now(), min_payout_cents, seller.payout_share)
    if terms is None:
        return None
    pii_fields = set(ctx.loaded.schemas[vertical].pii_fields)
    pii = {k: v for k, v in lead.items() if k in pii_fields}
    # The lead score is a field buyers filter the pool on, as in the auction.
    redacted = {k: v for k, v in lead.items() if k not in pii_fields}
    plain = dict(score_lead(ctx.loaded.scorers.get(vertical), redacted).fields)
    return PoolOffer(
        ping_id=ping_id, seller_id=seller.id, vertical=vertical, lead=plain,
        phone_hash=contacts.phone if contacts else None,
        email_hash=contacts.email if contacts else None,
        terms=terms, sealed=keys.seal(pii, sealing_context(ping_id)), sub_id=sub_id,
    )  # fmt: skip


async def offer_to_pool(
    ctx: ExchangeContext,
    ping_id: str,
    vertical: str,
    seller: SellerConfig,
    lead: Mapping[str, Any],
    contacts: ContactHashes | None = None,
    min_payout_cents: int = 0,
    sub_id: str | None = None,
) -> bool:
    """Offer an unsold full lead to its vertical's pool (for a lead whose post is already
    closed, e.g. a held lead whose hold ended unsold); True when it entered the pool."""
    offer = build_offer(ctx, ping_id, vertical, seller, lead, contacts, min_payout_cents, sub_id)
    if offer is None or not await ctx.store.add_offer(offer):
        return False
    _entered(ctx, offer)
    return True


async def close_unsold(
    ctx: ExchangeContext,
    ping_id: str,
    vertical: str,
    seller: SellerConfig,
    reason: str,
    lead: Mapping[str, Any] | None,
    contacts: ContactHashes | None = None,
    min_payout_cents: int = 0,
    sub_id: str | None = None,
) -> bool:
    """Close a post unsold for ``reason``, its lead offered to the pool in the same
    statement when the reason and the settings allow (the hybrid flow: push first, then
    pull); False when the post was no longer in progress (then nothing is offered)."""
    now = ctx.clock.now()
    offer = None
    if lead is not None and poolable(reason):
        offer = build_offer(ctx, ping_id, vertical, seller, lead, contacts, min_payout_cents,
                            sub_id)  # fmt: skip
    if offer is None:
        return await ctx.store.finish_unsold(ping_id, reason, now)
    closed = await ctx.store.close_unsold_into_pool(offer, reason, now)
    if closed:
        _entered(ctx, offer)
    return closed


def _entered(ctx: ExchangeContext, offer: PoolOffer) -> None:
    ctx.metrics.record_pool_entry(offer.vertical)
    log.info("pool_offer", ping_id=offer.ping_id, vertical=offer.vertical,
             seller=offer.seller_id, start_price_cents=offer.terms.start_price_cents)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Listed:
    """An offer as one buyer sees it: what it may claim, at what price now."""

    offer: PoolOffer
    price_cents: int
    visibility: str


def _rules(buyer: BuyerConfig, vertical: str) -> BuyerRules:
    return BuyerRules.from_config(buyer, vertical)


def _refusal(
    ctx: ExchangeContext,
    buyer: BuyerConfig,
    offer: PoolOffer,
    past: Sequence[PastSale],
    now: datetime,
) -> str | None:
    """Why ``buyer`` may not have ``offer`` (the auction's screening, and the vertical's
    duplicate window), or None. Caps are checked against this process's view here; the
    claim reserves them exactly."""
    if not buyer.enabled:
        return f"buyer {buyer.id} is paused"
    seller = next((s for s in ctx.loaded.config.sellers if s.id == offer.seller_id), None)
    if seller is not None and not seller.enabled:  # nothing of a paused seller is sold
        return f"seller {seller.id} is paused"
    if offer.vertical not in buyer.verticals:
        return f"vertical {offer.vertical} is not one of buyer {buyer.id}'s verticals"
    vertical = ctx.loaded.config.verticals[offer.vertical]
    if sold_in_vertical(past, offer.vertical, vertical.dedupe_days, now):
        return "duplicate: the same person was sold in this vertical lately"
    rules = _rules(buyer, offer.vertical)
    duplicates = buyers_with_lead(past, {buyer.id: buyer.dedupe_days}, now)
    _, excluded = screen([rules], offer.seller_id, offer.lead, now, ctx.caps.counts,
                         duplicates, offer.sub_id)  # fmt: skip
    if excluded:
        return _why(excluded[0])
    return None


def _why(exclusion: Exclusion) -> str:
    return f"{exclusion.outcome.value}: {exclusion.reason}"


async def _past_sales(
    ctx: ExchangeContext, buyer: BuyerConfig, offers: Sequence[PoolOffer], now: datetime
) -> dict[str, list[PastSale]]:
    """Per offer, the recorded sales of the same person within the windows that matter."""
    verticals = ctx.loaded.config.verticals
    days = max([buyer.dedupe_days, *(verticals[o.vertical].dedupe_days for o in offers)])
    hashes = {h for o in offers for h in (o.phone_hash, o.email_hash) if h is not None}
    if not days or not hashes:
        return {}
    found = await ctx.store.sales_of_contacts(sorted(hashes), now - timedelta(days=days))
    past: dict[str, list[PastSale]] = {}
    for offer in offers:
        mine = {offer.phone_hash, offer.email_hash} - {None}
        past[offer.ping_id] = [s for phone, email, s in found if {phone, email} & mine]
    return past


def pool_verticals(ctx: ExchangeContext, buyer: BuyerConfig) -> list[str]:
    """The buyer's verticals whose pool is on."""
    found = []
    for name in buyer.verticals:
        vertical = ctx.loaded.config.verticals.get(name)
        if vertical is not None and vertical.pool is not None and vertical.pool.enabled:
            found.append(name)
    return found


@dataclass(frozen=True, slots=True)
class Listing:
    """A page of the offers a buyer may claim, and where the next page starts (None: no
    open offer is left past this page)."""

    offers: list[Listed]
    next_after: OfferPosition | None


async def list_offers(
    ctx: ExchangeContext,
    buyer: BuyerConfig,
    verticals: Sequence[str],
    limit: int,
    after: OfferPosition | None = None,
) -> Listing:
    """Up to ``limit`` open offers of ``verticals`` this buyer may claim now, newest
    first, from the first past ``after``. Offers the buyer may not claim are passed
    over; once LIST_SCAN_LIMIT were looked at the page ends short, with a next page to
    ask for, so a request costs the same however much of the pool is not for it."""
    now = ctx.clock.now()
    listed: list[Listed] = []
    scanned = 0
    while scanned < LIST_SCAN_LIMIT:
        offers = await ctx.store.open_offers(verticals, now, LIST_PAGE, after)
        past = await _past_sales(ctx, buyer, offers, now)
        for offer in offers:
            scanned += 1
            after = offer.position
            pool = ctx.loaded.config.verticals[offer.vertical].pool
            if pool is None or not pool.enabled:
                continue
            if _refusal(ctx, buyer, offer, past.get(offer.ping_id, []), now) is None:
                listed.append(Listed(offer, offer.terms.price_at(now), pool.visibility))
                if len(listed) >= limit:
                    return Listing(listed, after)
        if len(offers) < LIST_PAGE:
            return Listing(listed, None)  # the pool is read to its end
    return Listing(listed, after)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claim won: the sale's price and payout, and the full lead."""

    offer: PoolOffer
    lead: dict[str, Any]
    price_cents: int
    payout_cents: int
    claimed_at: datetime


async def claim(ctx: ExchangeContext, buyer: BuyerConfig, ping_id: str) -> Claimed:
    """Sell a pooled lead to ``buyer`` at its price now, if it is first and allowed.

    404: no such offer, or it left the pool (expired, or its vertical's pool is off);
    409: another buyer claimed it first; 403: the buyer's own controls refuse it
    (the message names which)."""
    now = ctx.clock.now()
    offer = await ctx.store.pool_offer(ping_id)
    if offer is None:
        raise NotFound(f"no lead {ping_id} in the pool")
    if offer.claimed_by is not None:
        raise Conflict(f"lead {ping_id} was already claimed")
    if offer.expired_at is not None or offer.terms.expired(now) or offer.sealed is None:
        left = offer.expired_at or offer.terms.expires_at  # taken out early, or at max age
        raise NotFound(f"lead {ping_id} left the pool at {left.isoformat()}")
    vertical = ctx.loaded.config.verticals.get(offer.vertical)
    if vertical is None or vertical.pool is None or not vertical.pool.enabled:
        raise NotFound(f"the pool of vertical {offer.vertical} is off")
    seller = next((s for s in ctx.loaded.config.sellers if s.id == offer.seller_id), None)
    if seller is None:
        raise NotFound(f"lead {ping_id}'s seller is no longer configured")
    price = offer.terms.price_at(now)
    past = (await _past_sales(ctx, buyer, [offer], now)).get(ping_id, [])
    refused = _refusal(ctx, buyer, offer, past, now)
    if refused is not None:
        raise Forbidden(f"buyer {buyer.id} may not claim lead {ping_id}: {refused}")
    lead = {**offer.lead, **_open(ctx, offer)}
    # A person put on one of the vertical's suppression lists while the lead waited is
    # never sold from the pool either: the offer leaves it.
    suppressed_by = await check_suppression(ctx, offer.vertical, lead)
    if suppressed_by is not None:
        if await ctx.store.withdraw_offer(ping_id, now):
            ctx.metrics.record_pool_expired(offer.vertical, 1)
        ctx.metrics.record_suppressed(offer.vertical, suppressed_by)
        log.info("pool_offer_suppressed", ping_id=ping_id, list=suppressed_by)
        raise NotFound(f"lead {ping_id} left the pool: it is on a suppression list")
    payout = payout_cents(price, seller.payout_share)
    rules = _rules(buyer, offer.vertical)
    # Another lead of this person claimed or posted meanwhile: the duplicate windows hold
    # against it (the person reserved for this claim, given back unless it sells).
    scopes = buyer_scope(rules, now) + vertical_scope(ctx, offer.vertical, now)
    contacts = ContactHashes(offer.phone_hash, offer.email_hash)
    why = await reserve_person(ctx, ping_id, contacts, scopes, CLAIM_BUSY_S)
    if why is not None:
        raise Forbidden(f"buyer {buyer.id} may not claim lead {ping_id}: duplicate: {why}")
    windows = rules.caps.windows(now) if rules.caps is not None else []
    sale_id = None
    try:
        if windows:
            reached = await ctx.store.reserve_caps(buyer.id, windows, price)
            if reached is not None:
                raise Forbidden(f"buyer {buyer.id} may not claim lead {ping_id}: capped: {reached}")
        try:
            sale_id = await ctx.store.claim_offer(ping_id, buyer.id, now, price, payout)
        finally:
            if sale_id is None and windows:
                with contextlib.suppress(*DATABASE_DOWN):
                    await ctx.store.release_caps(buyer.id, windows, price)
    finally:
        if sale_id is None:
            await release_person(ctx, ping_id, scopes)
    if sale_id is None:
        raise Conflict(f"lead {ping_id} was already claimed, or has just left the pool")
    ctx.metrics.record_pool_claim(seller.id, buyer.id, offer.vertical, price, payout)
    log.info("pool_claim", ping_id=ping_id, buyer=buyer.id, vertical=offer.vertical,
             price_cents=price, sale_id=sale_id)  # fmt: skip
    return Claimed(offer, lead, price, payout, now)


def _open(ctx: ExchangeContext, offer: PoolOffer) -> dict[str, Any]:
    """The offer's PII, opened before any sale is made of it: a lead that cannot be
    delivered is never sold."""
    keys, sealed = ctx.pii_keys, offer.sealed
    assert sealed is not None
    try:
        if keys is None:
            raise SealingError("no exchange.pii_key is configured")
        return keys.open(sealed, sealing_context(offer.ping_id))
    except SealingError as exc:
        log.error("pool_offer_unreadable", ping_id=offer.ping_id, key_id=sealed.key_id,
                  error=str(exc))  # fmt: skip
        raise NotReady(
            f"lead {offer.ping_id} cannot be opened: {exc}", headers={"Retry-After": "60"}
        ) from None


async def withdraw_suppressed(ctx: ExchangeContext, list_name: str, verticals: list[str]) -> int:
    """Take out of the pool now, PII purged, every open offer of ``verticals`` whose person
    is on list ``list_name`` (just loaded); how many. A claim would refuse them anyway:
    this is for the PII, which a suppression (a do-not-call or an erasure request) must
    not leave sealed in the pool until the offer's max age. Offers read a page at a time;
    one that no configured key opens is left to its max age."""
    key = ctx.loaded.settings.suppression_hash_key
    keys = ctx.pii_keys
    if not key or keys is None or not verticals:
        return 0
    withdrawn = 0
    after: str | None = None
    while True:
        page = await ctx.store.sealed_open_offers(verticals, after, LIST_PAGE)
        hashes: dict[str, list[bytes]] = {}
        for ping_id, vertical, sealed in page:
            try:
                pii = keys.open(sealed, sealing_context(ping_id))
            except SealingError:
                continue
            schema = ctx.loaded.schemas.get(vertical)
            if schema is not None:
                hashes[ping_id] = lead_hashes(pii, schema, key.encode())
        listed = await ctx.store.listed_hashes(list_name, [h for v in hashes.values() for h in v])
        now = ctx.clock.now()
        for ping_id, vertical, _ in page:
            if set(hashes.get(ping_id, ())) & listed and await ctx.store.withdraw_offer(
                ping_id, now
            ):
                withdrawn += 1
                ctx.metrics.record_pool_expired(vertical, 1)
                ctx.metrics.record_suppressed(vertical, list_name)
                log.info("pool_offer_suppressed", ping_id=ping_id, list=list_name)
        if len(page) < LIST_PAGE:
            return withdrawn
        after = page[-1][0]
        await asyncio.sleep(0)  # other requests' turn


async def sweep_pool(ctx: ExchangeContext) -> dict[str, int]:
    """Take offers past their age out of the pool (PII purged) and refresh the pool's
    gauges; per vertical, how many left. Any number of processes may run it at once."""
    now = ctx.clock.now()
    expired = await ctx.store.expire_offers(now)
    for vertical, count in expired.items():
        ctx.metrics.record_pool_expired(vertical, count)
    stats = await ctx.store.pool_stats(now)
    for vertical, config in ctx.loaded.config.verticals.items():
        if config.pool is None:
            continue
        found = stats.get(vertical)
        oldest = found.oldest_entered_at if found is not None else None
        age_s = (now - oldest).total_seconds() if oldest is not None else 0.0
        ctx.metrics.record_pool_size(vertical, found.offers if found else 0, age_s)
    return expired


async def keep_pool(ctx: ExchangeContext) -> None:
    """Sweep every SWEEP_INTERVAL_S while the process runs (started by the app), whatever
    the config says of pools now: offers a pool left when it was taken out of the config
    still hold sealed PII until their max age (one indexed read when there are none)."""
    while True:
        try:
            await sweep_pool(ctx)
            # Reservations of people whose offers' processes died run out here too.
            await ctx.store.sweep_contact_reservations(ctx.clock.now())
        except DATABASE_DOWN:
            pass  # the database watcher reports it; the next sweep catches up
        except Exception as exc:  # a sweep must never stop the process's sweeping
            log.warning("pool_sweep_failed", error=type(exc).__name__)
        await asyncio.sleep(SWEEP_INTERVAL_S)


def pool_stage(offer: PoolOffer | None) -> dict[str, Any] | None:
    """The pool stage of an auction's record: when the lead entered, on what terms, and
    how it left (claimed, by whom and at what price, or expired); None if never pooled."""
    if offer is None:
        return None
    terms = offer.terms
    if offer.claimed_by is not None:
        status = "claimed"
    elif offer.expired_at is not None:
        status = "expired"
    else:
        status = "offered"
    return {
        "status": status,
        "entered_at": _iso(terms.entered_at),
        "expires_at": _iso(terms.expires_at),
        "start_price": dollars_json(terms.start_price_cents),
        "floor_price": dollars_json(terms.floor_price_cents),
        "decay_per_hour": dollars_json(terms.decay_cents_per_hour),
        "claimed_by": offer.claimed_by,
        "claimed_at": _iso(offer.claimed_at),
        "price": dollars_json(offer.price_cents),
        "payout": dollars_json(offer.payout_cents),
        "expired_at": _iso(offer.expired_at),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None
