"""How likely a buyer is to take a lead it bid on: p(accept), the number behind the
``expected_value`` ranking (docs/auction.md, "Rankings").

For one buyer in one vertical, over the vertical's ``acceptance_window_days``::

    p(accept) = (accepted posts + prior accepts) / (posts + prior posts)

A post is any attempt to post the lead to the buyer (accepted, rejected, timed out or
errored; a buyer skipped for its caps was not posted to). The prior (``acceptance_prior``,
default 8 of 10) is where a buyer with no history starts, and how many real posts it takes
to move away from it: after 10 posts the buyer's own record weighs as much as the prior.

Exact: p is a Fraction and a bid's expected value the Fraction price x p, so a ranking by
expected value never depends on float rounding. What the ledger and the auction record
show is derived from these (``p_accept`` as a float, ``expected_value_cents`` rounded
down to the cent). Pure: the tallies come in from the ledger (exchange/ledger/acceptance.py)
through the auction's view of them (exchange/auction/acceptance.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from exchange.core.config import AcceptancePrior


@dataclass(frozen=True, slots=True)
class Tally:
    """One buyer's posts in one vertical within the window, and how many it accepted."""

    posts: int
    accepted: int


def p_accept(tally: Tally | None, prior: AcceptancePrior) -> Fraction:
    """The smoothed acceptance rate: the prior alone for a buyer with no posts."""
    posts = prior.posts + (tally.posts if tally is not None else 0)
    accepted = prior.accepts + (tally.accepted if tally is not None else 0)
    return Fraction(accepted, posts)


def expected_value(price_cents: int, p: Fraction) -> Fraction:
    """What a bid is worth once the chance that its buyer rejects the post is counted."""
    return price_cents * p


def expected_value_cents(price_cents: int, p: Fraction) -> int:
    """The expected value as shown (rounded down to the cent); ranking uses the exact one.
    Integer arithmetic on p's terms, as ``int(price_cents * p)`` (truncated toward zero)
    without building a Fraction: an auction asks this of every bid."""
    product = price_cents * p.numerator
    if product >= 0:
        return product // p.denominator
    return -(-product // p.denominator)


@dataclass(frozen=True, slots=True)
class AcceptanceRates:
    """p(accept) of each buyer of one vertical, worked out once per refresh of the tallies
    so an auction pays a dictionary lookup per bid. A buyer not listed is at the prior."""

    prior: Fraction
    rates: Mapping[str, Fraction] = field(default_factory=dict)

    def of(self, buyer_id: str) -> Fraction:
        return self.rates.get(buyer_id, self.prior)

    @classmethod
    def from_tallies(cls, tallies: Mapping[str, Tally], prior: AcceptancePrior) -> AcceptanceRates:
        return cls(
            prior=p_accept(None, prior),
            rates={buyer: p_accept(t, prior) for buyer, t in tallies.items()},
        )
