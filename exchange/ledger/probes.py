"""Auto-pause probe claims (table buyer_probes, migration 0022): which process sends the
probe ping to an auto-paused buyer whose cool-down is over.

Every process checks the paused buyers; each that finds a cool-down over tries to claim
the buyer's row in one atomic statement, and only the one whose statement changed the
row probes. The row keeps the auto-pause it was last probed under (its settings
version) and when, so a new pause is probed after its own cool-down, and after a failed
probe the next one is due a cool-down after it, whichever process sent it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

# Claimed when no row is there, the row is of an earlier pause, or its probe is a
# cool-down old; two processes claiming at once queue on the row and the second's
# condition no longer holds, so it updates nothing.
_CLAIM = """
INSERT INTO buyer_probes AS p (buyer_id, pause_version, probed_at, probed_by)
VALUES ($1, $2, $3, $4)
ON CONFLICT (buyer_id) DO UPDATE
    SET pause_version = EXCLUDED.pause_version, probed_at = EXCLUDED.probed_at,
        probed_by = EXCLUDED.probed_by
    WHERE p.pause_version <> EXCLUDED.pause_version OR p.probed_at <= $5
RETURNING buyer_id
"""


class ProbeClaims:
    def __init__(self, pool: asyncpg.Pool, owner: str) -> None:
        self.pool = pool
        self.owner = owner  # this process, as recorded in probed_by

    async def claim(
        self, buyer_id: str, pause_version: int, now: datetime, cool_down: timedelta
    ) -> bool:
        """True when this process is to probe ``buyer_id`` now (paused by the change
        ``pause_version``); False when another process has, within the cool-down."""
        won = await self.pool.fetchval(
            _CLAIM, buyer_id, pause_version, now, self.owner, now - cool_down
        )
        return won is not None
