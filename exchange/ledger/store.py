"""The ledger store: the one object the rest of the exchange holds (``ctx.store``),
joining the ledger's areas, each with its own SQL in its own module:

- pings (exchange/ledger/pings.py): a ping read back, external ids;
- claims (claims.py): post claims, closing abandoned ones, process heartbeats;
- sales (sales.py): the money, and the post's final result;
- caps, tiers, duplicates (caps.py, tiers.py, duplicates.py): buyer controls at post time;
- returns (returns.py): a sale found for its return, and the return;
- reports (reports.py): an auction's story, the buyer and seller reports;
- sub-IDs (sub_ids.py): the seller report per traffic source;
- acceptance (acceptance.py): the tallies behind p(accept), and breaches;
- offers (offers.py): the lead pool: offers, claims with their sales, expiry;
- suppression (suppression.py): suppression lists, their loads and the post-time look-up;
- holds (holds.py): leads held for buyers off schedule, their delivery claims and end;
- reservations (reservations.py): a person held against a second offer meanwhile.

Connecting and migrating is exchange/ledger/pool.py; non-money rows (pings, bid outcomes,
post attempts) arrive through the batch writer (exchange/ledger/batch.py). Every read
gives typed values back, never a database record.
"""

from __future__ import annotations

import uuid

import asyncpg

from exchange.ledger.acceptance import Acceptance
from exchange.ledger.caps import Caps
from exchange.ledger.claims import Claims
from exchange.ledger.duplicates import Duplicates
from exchange.ledger.holds import Holds
from exchange.ledger.offers import Offers
from exchange.ledger.pings import Pings
from exchange.ledger.reports import Reports
from exchange.ledger.reservations import Reservations
from exchange.ledger.returns import Returns
from exchange.ledger.sales import Sales
from exchange.ledger.search import Search
from exchange.ledger.sub_ids import SubIds
from exchange.ledger.suppression import Suppression
from exchange.ledger.tiers import Tiers


class Store(
    Pings,
    Claims,
    Sales,
    Caps,
    Tiers,
    Duplicates,
    Returns,
    Reports,
    Search,
    SubIds,
    Acceptance,
    Offers,
    Suppression,
    Holds,
    Reservations,
):
    def __init__(
        self, pool: asyncpg.Pool, timeout_s: float = 1.0, owner: str | None = None
    ) -> None:
        self.pool = pool
        # How long a request-path call may take (exchange.ledger.bounded).
        self.timeout_s = timeout_s
        self.owner = owner or uuid.uuid4().hex
