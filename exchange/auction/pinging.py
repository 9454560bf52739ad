"""Running one ping auction: screen buyers, fan the redacted ping out under the deadline,
rank, and record. The decisions are the pure core's (exchange.core.classify: every buyer's
outcome, the ping tree and the price); this module is the I/O around them.

The deadline is absolute: at ``start + tmax`` the auction stops waiting, cancels the
buyers still out (each recorded as ``timeout``) and answers with what it has.

Two clocks: the event loop's (``loop.time()``) schedules, the deadline and the timers;
everything recorded as a time taken (each buyer's latency, the auction's duration and
overhead, the commit) is measured with ``time.perf_counter_ns()``, as the loop's clock
has millisecond resolution and is read once per loop iteration under uvloop. A buyer's
latency is the transport's own measure (``HttpResponse.elapsed_us``, docs/observability.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn

import structlog

from buyers.adapter import BidReply, HttpResponse, PingOffer
from exchange.auction.context import BuyerRuntime, ExchangeContext
from exchange.auction.pingcache import PingRecord, ledger_tree
from exchange.core.classify import (
    BID_FIRST,
    AuctionInputs,
    BuyerReply,
    classify,
    first_bid_stands,
)
from exchange.core.config import SellerConfig
from exchange.core.errors import Invalid, NotReady
from exchange.core.outcomes import BidOutcome, Overload, PingStatus
from exchange.core.ranking import effective_floor, max_sales, ranking_of, screen, tie_at_top
from exchange.core.scoring import score_lead
from exchange.core.storable import MAX_REASON_CHARS, clean_text
from exchange.ledger.dead_letters import RowRejected
from exchange.ledger.rows import BidOutcomeRow, PingRow
from exchange.transport.base import TransportTimeout

log = structlog.get_logger("exchange.ping")

# Time kept back from tmax for ranking and answering, so the answer itself leaves by tmax.
ANSWER_MARGIN_S = 0.002
DEADLINE_SLACK_S = 0.005
# The transport settles every request by its deadline; this is how long past it the
# auction still waits for that verdict before calling a buyer timed out itself.
SETTLE_SLACK_S = 0.001
# At most this share of tmax is kept back for answering: ranking, committing the ping row
# and the event loop's own lag (exchange.telemetry.looplag)...
MAX_KEPT_SHARE = 0.2
# ...except that the ping row's recent commit time is kept back in full up to this share:
# an answer cannot carry a price before its row commits, so a ledger slower than a fifth
# of tmax takes buyers' time rather than turn every answer into a 503 at the deadline.
MAX_COMMIT_SHARE = 0.5
# How far past tmax an answer may wait for its ping row to commit before it is a 503
# (Overload.LEDGER_LATE). tmax is the seller's deadline: a price later than that is one
# the seller may no longer be waiting for, so the answer is due by tmax +
# DEADLINE_SLACK_S whatever the ledger does, and the rest of that slack is for writing it.
ANSWER_SLACK_S = 0.003
# An auction already past that when its commit starts (its process ran late) is late
# whatever it answers, and a late price beats a late error: its commit gets this long.
LATE_COMMIT_S = 0.1


class AdapterError(Exception):
    """A buyer's adapter raised while building its request: recorded as that buyer's
    error, the auction goes on."""


@dataclass(slots=True)
class FanOut:
    """What came of asking the buyers: each one's reply as the core reads it (BuyerReply:
    built once per buyer, straight from its adapter's BidReply), and the time the auction
    spent waiting on them (time.perf_counter_ns), the rest of its duration being its
    overhead."""

    calls: list[BuyerReply]
    waited_ns: int


@dataclass(slots=True)  # made per ping: not frozen (3x the cost to build); never mutated
class PingRequest:
    ping_id: str
    seller: SellerConfig
    vertical: str
    lead: dict[str, Any]  # redacted and normalised
    tmax_ms: int
    external_id: str | None
    mode: str  # "ping" or "direct"
    # When the request reached its handler (loop time): tmax counts from here, so the
    # checks and ledger reads before the auction are inside the seller's deadline.
    received_at: float
    duplicates: Mapping[str, str] = field(default_factory=dict)  # buyer -> why (direct posts)
    offer_to_buyers: bool = True  # False: record the lead, ask nobody (a known duplicate)
    # When the request reached its handler on the measuring clock (time.perf_counter_ns):
    # the auction's duration and overhead count from here; received_at is for the deadline.
    received_ns: int = field(default_factory=time.perf_counter_ns)
    # The time the auction is recorded under (its ledger rows' created_at), when its ping
    # id was bound to a seller's external_id: the bound id's first claim's. A repeat that
    # runs the auction again (the first attempt's never reached the ledger) then writes
    # the same keys, and whichever reaches the ledger first stands (exchange/ledger/pings.py).
    # None: now.
    recorded_at: datetime | None = None
    sub_id: str | None = None  # the seller's traffic source (SPEC section 11)


async def _fan_out(
    ctx: ExchangeContext,
    buyers: list[BuyerRuntime],
    offer: PingOffer,
    deadline: float,
    stop: Callable[[BidReply], bool] | None = None,
) -> FanOut:
    """Ask every buyer at once; each answer, failure or timeout is a BuyerReply, and how
    long the auction waited on them (every request sent, until the last answer or the
    deadline) is the FanOut's ``waited_ns``.

    ``stop`` (``auction: first_bid``): the first answer it holds for ends the wait; the
    buyers still out then are ``cancelled``, not timed out.

    No task per buyer: the transport writes each request at once and resolves a future
    per buyer, all bound by the deadline (a buyer's own ``timeout_ms`` may cut its
    request shorter)."""
    if not buyers:
        return FanOut([], 0)
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    sent_ns = time.perf_counter_ns()
    timestamp = int(ctx.clock.unix_time())
    start = ctx.transport.start
    futures: list[asyncio.Future[HttpResponse]] = []
    limits: list[float] = []
    for buyer in buyers:
        until = deadline
        if buyer.timeout_ms is not None:
            until = min(deadline, sent_at + buyer.timeout_ms / 1000)
        limits.append(until - sent_at)
        try:
            request = buyer.adapter.ping_request(offer, timestamp)
        except Exception as exc:  # an adapter that cannot build the request: that buyer's error
            failed: asyncio.Future[HttpResponse] = loop.create_future()
            failed.set_exception(AdapterError(f"adapter failed: {type(exc).__name__}"))
            futures.append(failed)
            continue
        futures.append(start(request, until, buyer=buyer.rules.buyer_id))
    ended = False
    ends_wait = None
    if stop is not None:
        buyer_of = dict(zip(futures, buyers, strict=True))

        def ends_wait(future: asyncio.Future[HttpResponse]) -> bool:
            nonlocal ended
            if future.cancelled() or future.exception() is not None:
                return False
            if stop(storable_bid(buyer_of[future], future.result())):
                ended = True
            return ended

    waiting_ns = time.perf_counter_ns()
    try:
        finished = await _settled(loop, futures, deadline + SETTLE_SLACK_S, ends_wait)
    finally:
        waiting_ns = time.perf_counter_ns() - waiting_ns
        for future in futures:
            if not future.done():  # cancelled, or a transport that missed its deadline
                future.cancel()
    calls: list[BuyerReply] = []
    for buyer, future, limit_s in zip(buyers, futures, limits, strict=True):
        buyer_id = buyer.rules.buyer_id
        done_ns = finished.get(future)
        if (done_ns is None or future.cancelled()) and ended:
            waited_us = us_of(time.perf_counter_ns() - sent_ns)
            calls.append(BuyerReply(buyer_id, BidOutcome.CANCELLED, waited_us, reason=BID_FIRST))
            continue
        if done_ns is None or future.cancelled():
            waited_us = us_of(time.perf_counter_ns() - sent_ns)
            calls.append(BuyerReply(buyer_id, BidOutcome.TIMEOUT, waited_us,
                                    reason="no answer by the auction deadline"))  # fmt: skip
            continue
        latency_us = us_of(done_ns - sent_ns)
        failure = future.exception()
        if failure is None:
            response = future.result()
            reply = storable_bid(buyer, response)
            if response.elapsed_us is not None:  # from its request written to its last byte
                latency_us = response.elapsed_us
        elif isinstance(failure, TransportTimeout):
            reply = BidReply(BidOutcome.TIMEOUT, reason=f"no answer within {limit_s * 1000:.0f} ms")
        else:
            reply = BidReply(BidOutcome.ERROR, reason=str(failure) or type(failure).__name__)
        calls.append(BuyerReply(buyer_id, reply.outcome, latency_us, reply.price_cents,
                                reply.bid_id, reply.reason))  # fmt: skip
    return FanOut(calls, waiting_ns)


def us_of(ns: int) -> int:
    """Nanoseconds as whole microseconds, rounded up: a time measured is never 0."""
    return -(-ns // 1000)


def storable_bid(buyer: BuyerRuntime, response: HttpResponse) -> BidReply:
    """The buyer's answer as its adapter reads it, its free text made storable
    (exchange.core.storable). Whether a bid stands (``max_bid``, a bid id the ledger can
    keep) is exchange.core.classify's to decide."""
    try:
        reply = buyer.adapter.read_bid(response)
    except Exception as exc:  # an adapter must not raise; if one does, it is its buyer's error
        return BidReply(BidOutcome.ERROR, reason=f"adapter failed: {type(exc).__name__}")
    if reply.reason is not None:
        reason = clean_text(reply.reason, MAX_REASON_CHARS)
        if reason != reply.reason:  # replies may be shared: a new one, not a changed one
            return BidReply(reply.outcome, reply.price_cents, reply.bid_id, reason)
    return reply


async def _settled(
    loop: asyncio.AbstractEventLoop,
    futures: list[asyncio.Future[HttpResponse]],
    give_up_at: float,
    ends_wait: Callable[[asyncio.Future[HttpResponse]], bool] | None = None,
) -> dict[asyncio.Future[HttpResponse], int]:
    """Wait until every future is done, `give_up_at` (loop time) passed, or `ends_wait`
    holds for one that is done; when each one finished (time.perf_counter_ns)."""
    finished: dict[asyncio.Future[HttpResponse], int] = {}
    everyone: asyncio.Future[None] = loop.create_future()
    left = len(futures)

    def one_done(future: asyncio.Future[HttpResponse]) -> None:
        nonlocal left
        finished[future] = time.perf_counter_ns()
        left -= 1
        if (not left or (ends_wait is not None and ends_wait(future))) and not everyone.done():
            everyone.set_result(None)

    def give_up() -> None:
        if not everyone.done():
            everyone.set_result(None)

    for future in futures:
        future.add_done_callback(one_done)
    timer = loop.call_at(give_up_at, give_up)
    try:
        await everyone
    finally:
        timer.cancel()
        if left:
            for future in futures:
                if future not in finished:
                    future.remove_done_callback(one_done)
    return finished


# One bid_outcomes row (exchange/ledger/rows.py): a slots dataclass, cheap to build, since
# an auction makes one per buyer.
OutcomeRow = BidOutcomeRow


def kept_back_s(tmax_s: float, commit_s: float, lag_s: float) -> float:
    """How long before tmax the auction stops waiting on buyers: enough to rank
    (ANSWER_MARGIN_S), commit the ping row (its recent commit time) and absorb the event
    loop's recent lag, within MAX_KEPT_SHARE of tmax; the commit alone may take up to
    MAX_COMMIT_SHARE."""
    wanted = ANSWER_MARGIN_S + commit_s + lag_s
    cap = max(tmax_s * MAX_KEPT_SHARE, min(ANSWER_MARGIN_S + commit_s, tmax_s * MAX_COMMIT_SHARE))
    return min(wanted, cap)


# Long on purpose: one auction's steps in order (deadline, screening, fan-out, the
# core's decision, the record); split, the deadline arithmetic would scatter.
async def run_ping(ctx: ExchangeContext, request: PingRequest) -> PingRecord:
    """Run the auction for one redacted lead and record it; returns the ping's record."""
    started = request.received_at
    now = ctx.clock.now()
    settings = ctx.loaded.settings
    tmax_ms = min(request.tmax_ms, settings.tmax_ms)
    # Stop waiting on buyers early enough to rank, commit the ping row and answer by tmax
    # even when the loop runs the deadline late.
    kept_back = kept_back_s(tmax_ms / 1000, ctx.commit_time.value(started), ctx.lag.recent_s)
    deadline = started + tmax_ms / 1000 - kept_back
    ping_id = request.ping_id
    seller = request.seller
    vertical = ctx.loaded.config.verticals[request.vertical]
    # The lead score (exchange/core/scoring.py): buyer filters see it as a field, and the
    # floor it sets counts when above the seller's and the vertical's.
    scored = score_lead(ctx.loaded.scorers.get(request.vertical), request.lead)
    floor_cents = max(effective_floor(seller, vertical, request.vertical), scored.floor_cents)
    if scored.score is not None:
        ctx.metrics.record_lead_score(request.vertical, scored.score)

    rules = ctx.by_vertical.get(request.vertical, ()) if request.offer_to_buyers else ()
    eligible, excluded = screen(
        rules,
        seller.id,
        scored.fields,
        now,
        ctx.caps.counts,
        request.duplicates,
        request.sub_id,
    )
    realtime = [ctx.buyers[b.buyer_id] for b in eligible if b.fixed_price_cents is None]

    offer = PingOffer(ping_id, request.vertical, tmax_ms, floor_cents, request.lead, scored.score)
    ctx.metrics.record_auction_started()
    try:
        stop = None
        if vertical.auction == "first_bid":
            max_bid = vertical.max_bid

            def stop(reply: BidReply) -> bool:
                return first_bid_stands(
                    reply.outcome, reply.price_cents, reply.bid_id, floor_cents, max_bid
                )

        fanned = await _fan_out(ctx, realtime, offer, deadline, stop)
        replies, waited_ns = fanned.calls, fanned.waited_ns
    finally:
        ctx.metrics.record_auction_finished()

    ranking = ranking_of(settings, vertical)
    rotating = "round_robin" in settings.tie_breakers
    decision = classify(
        AuctionInputs(
            ping_id=ping_id,
            eligible=eligible,
            excluded=excluded,
            replies=replies,
            floor_cents=floor_cents,
            max_bid_cents=vertical.max_bid,
            tie_breakers=settings.tie_breakers,
            max_sales=max_sales(seller, vertical),
            payout_share=seller.payout_share,
            ranking=ranking,
            acceptance=ctx.acceptance.rates(request.vertical, ctx.loaded.config),
            last_tie_winner=ctx.rotation.last(request.vertical) if rotating else None,
            auction=vertical.auction,
        )
    )
    if rotating and tie_at_top(decision.tree, ranking):
        ctx.rotation.won(request.vertical, decision.tree[0].buyer_id)
    duration_ns = time.perf_counter_ns() - request.received_ns
    recorded_at = request.recorded_at or now
    record = PingRecord(
        ping_id=ping_id,
        seller_id=seller.id,
        vertical=request.vertical,
        external_id=request.external_id,
        lead=request.lead,
        tree=decision.tree,
        price_cents=decision.price_cents,
        payout_cents=decision.payout_cents,
        created_at=recorded_at,
        expires_at=now + timedelta(seconds=settings.ping_ttl_s),
        tmax_ms=tmax_ms,
        sub_id=request.sub_id,
    )
    rows = [
        OutcomeRow(ping_id, d.buyer_id, d.outcome, d.price_cents, d.latency_us, d.rank,
                   d.reason, recorded_at, None if d.p_accept is None else float(d.p_accept),
                   d.expected_value_cents)
        for d in decision.decisions
    ]  # fmt: skip
    timing = _Timing(started, request.received_ns, duration_ns, duration_ns - waited_ns)
    await _record(ctx, record, request.mode, rows, timing, deadline, scored.score)
    ctx.pings.put(record)
    return record


@dataclass(slots=True)
class _Timing:
    """One auction's clocks: when it started on the loop's clock (``started``, for the
    deadline), and on the measuring one (``received_ns``, time.perf_counter_ns), with the
    time to its ranking (``duration_ns``) and the part of it not spent waiting on buyers
    (``overhead_ns``)."""

    started: float
    received_ns: int
    duration_ns: int
    overhead_ns: int


# Long on purpose: the commit-before-answer sequence and its deadline accounting are
# one invariant (docs/auction.md, "Deadline"), kept together.
async def _record(
    ctx: ExchangeContext,
    record: PingRecord,
    mode: str,
    rows: list[OutcomeRow],
    timing: _Timing,
    deadline: float,
    score: int | None = None,
) -> None:
    started = timing.started
    duration_s = timing.duration_ns / 1e9
    overhead_us = us_of(max(0, timing.overhead_ns))
    status = PingStatus.BID if record.tree else PingStatus.NO_BID
    ctx.metrics.record_auction(
        record.tree[0].buyer_id if record.tree else None,
        [(r.buyer_id, r.outcome, r.latency_us) for r in rows],
    )
    await ctx.writer.add_many("bid_outcomes", rows)
    # The ping row commits before the seller hears a price: a quoted ping must survive a
    # crash so its post works, and a sale never lacks its auction. Group commit keeps this
    # to one short write shared by every ping answered meanwhile.
    loop = asyncio.get_running_loop()
    answer_by = started + record.tmax_ms / 1000 + ANSWER_SLACK_S
    commit_started = loop.time()
    commit_ns = time.perf_counter_ns()
    try:
        await ctx.writer.add_durable(
            "pings",
            PingRow(
                record.ping_id, record.seller_id, record.vertical, record.external_id, mode,
                record.tmax_ms, record.lead, status, record.price_cents,
                record.payout_cents, ledger_tree(record.tree), record.created_at,
                record.expires_at, us_of(timing.duration_ns), overhead_us,
                ranking_of(ctx.loaded.settings, ctx.loaded.config.verticals[record.vertical]),
                record.sub_id, score,
            ),
            give_up_at=answer_by if commit_started < answer_by else commit_started + LATE_COMMIT_S,
        )  # fmt: skip
    except TimeoutError:
        _ledger_late(ctx, record, started, deadline, duration_s, commit_ns)
    except RowRejected as rejected:
        # The edge checks (exchange.core.storable) let through a value the ledger refused: the
        # row is in the dead-letter table, and this ping alone fails, naming why.
        raise Invalid(
            f"the ledger refused to record this auction ({rejected.error}); "
            "a value of this lead cannot be stored",
            [{"loc": ["lead"], "msg": "holds a value the ledger cannot store"}],
        ) from None
    answered_ns = time.perf_counter_ns()
    commit_s = (answered_ns - commit_ns) / 1e9
    # A decaying maximum of recent commit times: the next auctions stop that much earlier.
    ctx.commit_time.observe(commit_s, loop.time())
    total_ns = answered_ns - timing.received_ns
    total_s = total_ns / 1e9
    missed = total_s > record.tmax_ms / 1000 + DEADLINE_SLACK_S
    # The answer's overhead: the auction's, and everything after its ranking (the commit).
    ctx.metrics.record_ping_answer(
        record.seller_id, record.vertical, status, total_s,
        max(0, timing.overhead_ns + total_ns - timing.duration_ns) / 1e9, missed,
    )  # fmt: skip
    if missed:
        # Where the time went: buyers are cut off at the deadline, then ranking and the
        # ping row's commit must fit in what was kept back.
        log.warning(
            "deadline_missed",
            ping_id=record.ping_id,
            vertical=record.vertical,
            total_ms=round(total_s * 1000, 1),
            buyers_cut_off_at_ms=round((deadline - started) * 1000, 1),
            ranked_at_ms=round(duration_s * 1000, 1),
            commit_ms=round(commit_s * 1000, 1),
            loop_lag_ms=round(ctx.lag.recent_s * 1000, 1),
        )
    log.debug(
        "auction",
        ping_id=record.ping_id,
        seller=record.seller_id,
        vertical=record.vertical,
        status=status.value,
        bids=len(record.tree),
        duration_ms=round(duration_s * 1000, 3),
    )


def _ledger_late(
    ctx: ExchangeContext,
    record: PingRecord,
    started: float,
    deadline: float,
    duration_s: float,
    commit_ns: int,
) -> NoReturn:
    """The ping row is still uncommitted at the answer's deadline: answer 503 now rather
    than a price late. The row stays queued and commits when the ledger catches up (its
    auction is then on record and a repeat of its external_id gets that answer); the
    next auctions keep back at least this long for their commit."""
    waited_s = (time.perf_counter_ns() - commit_ns) / 1e9
    ctx.commit_time.observe(waited_s, asyncio.get_running_loop().time())
    ctx.metrics.record_overload(Overload.LEDGER_LATE)
    log.warning(
        "ping_record_late",
        ping_id=record.ping_id,
        vertical=record.vertical,
        buyers_cut_off_at_ms=round((deadline - started) * 1000, 1),
        ranked_at_ms=round(duration_s * 1000, 1),
        commit_waited_ms=round(waited_s * 1000, 1),
        loop_lag_ms=round(ctx.lag.recent_s * 1000, 1),
    )
    retry = (
        "a retry with the same external_id gets its answer"
        if record.external_id is not None
        else "retry; with an external_id a retry gets this auction's answer"
    )
    raise NotReady(
        f"the auction ran but the ledger had not recorded it by tmax ({record.tmax_ms} ms); "
        + retry,
        headers={"Retry-After": "1"},
    )
