"""Money commits to disk before it is acknowledged; batched ledger rows only to
PostgreSQL's memory (docs/reliability.md, "Durable, but not fsynced")."""

from __future__ import annotations

from tests.harness import config_text, running_exchange


async def test_money_commits_synchronously_and_batches_do_not(database_url: str) -> None:
    async with running_exchange(config_text([]), database_url) as ex:
        money = await ex.ctx.store.pool.fetchval("SHOW synchronous_commit")
        batches = await ex.ctx.writer._pool.fetchval("SHOW synchronous_commit")
    assert (money, batches) == ("on", "off")
