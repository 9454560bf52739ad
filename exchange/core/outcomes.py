"""Closed sets of outcomes shared by the auction, the API, the metrics and the database.

Each enum's value is the one word used everywhere: in JSON answers, in metric labels and
in the database (where a CHECK constraint lists the same words; a test keeps the two in
step). Anything a buyer does that is not understood maps to an explicit ERROR.
"""

from enum import StrEnum


class BidOutcome(StrEnum):
    """What happened to one buyer in one auction (SPEC section 6)."""

    BID = "bid"
    NO_BID = "no_bid"
    TIMEOUT = "timeout"
    ERROR = "error"
    FILTERED = "filtered"
    CAPPED = "capped"
    OFF_SCHEDULE = "off_schedule"
    DUPLICATE = "duplicate"
    BELOW_FLOOR = "below_floor"
    SELLER_BLOCKED = "seller_blocked"
    # auction: first_bid. Another buyer's bid at or above the floor came first: this
    # buyer's bid (if it had answered) was set aside, or its ping was given up on.
    CANCELLED = "cancelled"


# The buyers an auction called (its ping went out to them); the other outcomes are buyers
# screened out before the call. A buyer's ping count, latency and timeouts are over these.
CALLED_OUTCOMES = frozenset(
    {BidOutcome.BID, BidOutcome.NO_BID, BidOutcome.TIMEOUT, BidOutcome.ERROR,
     BidOutcome.BELOW_FLOOR, BidOutcome.CANCELLED}
)  # fmt: skip
# Called buyers that answered with a price, above the seller's floor or not.
PRICED_OUTCOMES = frozenset({BidOutcome.BID, BidOutcome.BELOW_FLOOR})


class PostOutcome(StrEnum):
    """What happened to one attempt to post a lead to one buyer."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    TIMEOUT = "timeout"
    ERROR = "error"
    # Not called: the buyer reached a cap, or already has this lead, when its turn came.
    SKIPPED = "skipped"


class PingStatus(StrEnum):
    """The answer to a seller's ping."""

    BID = "bid"
    NO_BID = "no_bid"


class PostStatus(StrEnum):
    """The answer to a seller's post (and to a direct post)."""

    SOLD = "sold"
    UNSOLD = "unsold"
    # Held for buyers off schedule (delayed delivery, exchange/auction/holds.py): the
    # final outcome follows, in the auction record and in a repeat of the post.
    QUEUED = "queued"


class ClaimStatus(StrEnum):
    """Where a post stands in the ledger (``posts.status``): claimed and its walk under
    way, or finished with the answer's status. Never an answer itself: a seller hears
    only a PostStatus."""

    IN_PROGRESS = "in_progress"
    SOLD = PostStatus.SOLD.value
    UNSOLD = PostStatus.UNSOLD.value
    # Unsold at post time and held (held_leads): no walk runs, nothing closes it as
    # interrupted; its hold's delivery makes it sold, or unsold ``hold_expired``.
    QUEUED = PostStatus.QUEUED.value


class UnsoldReason(StrEnum):
    """Why a post ended unsold: the ``reason`` of its answer and of ``posts.reason``."""

    NO_BIDS = "no_bids"
    BELOW_MIN_PRICE = "below_min_price"
    ALL_DECLINED = "all_buyers_declined"
    DEADLINE = "post_deadline"
    # Its walk was gone (its process died, or the ledger went away midway) with no sale.
    INTERRUPTED = "post_interrupted"
    DUPLICATE = "duplicate"
    # A phone or email of the lead is on one of its vertical's suppression lists: no
    # buyer was offered it (exchange/core/suppression.py).
    SUPPRESSED = "suppressed"
    # Held for buyers off schedule, and none of them bought it within its hold.
    HOLD_EXPIRED = "hold_expired"


class Phase(StrEnum):
    """Which buyer call a request belongs to (the `phase` metric label)."""

    PING = "ping"
    POST = "post"


class Overload(StrEnum):
    """Why a ping or direct post was answered 503 for overload (the `reason` metric
    label): refused before its auction started, or at its deadline."""

    # exchange.max_inflight_auctions auctions were already running in this process.
    INFLIGHT = "inflight"
    # The process's event loop kept running later than exchange.overload_lag_ms.
    LOOP_LAG = "loop_lag"
    # The auction ran, but its ping row had not committed by tmax: the answer could not
    # carry a price by its deadline. The row commits later; a retry with the same
    # external_id gets the auction's answer.
    LEDGER_LATE = "ledger_late"
