"""The acceptance tallies behind p(accept): each buyer's posts and acceptances per
vertical within the vertical's window, summed from ``buyer_acceptance_daily`` (migration
0013), which the batch writer keeps up to date as post attempts are written
(exchange/ledger/rollups.py). A read is a few rows per buyer and day, whatever the
traffic; every process reads the same table, so every process ranks alike."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from exchange.core.acceptance import Tally
from exchange.ledger.bounded import LedgerArea

_TALLIES = """
SELECT a.vertical, a.buyer_id, sum(a.posts)::bigint AS posts,
       sum(a.accepted)::bigint AS accepted
FROM buyer_acceptance_daily AS a
JOIN unnest($1::text[], $2::date[]) AS w(vertical, since)
  ON a.vertical = w.vertical AND a.day >= w.since
GROUP BY 1, 2
"""


class Acceptance(LedgerArea):
    async def acceptance_tallies(self, since: Mapping[str, date]) -> dict[str, dict[str, Tally]]:
        """Per vertical, per buyer: posts and acceptances on days from ``since[vertical]``
        (its window's first UTC day) on."""
        verticals = list(since)
        rows = await self.pool.fetch(_TALLIES, verticals, [since[v] for v in verticals])
        found: dict[str, dict[str, Tally]] = {}
        for r in rows:
            found.setdefault(r["vertical"], {})[r["buyer_id"]] = Tally(r["posts"], r["accepted"])
        return found
