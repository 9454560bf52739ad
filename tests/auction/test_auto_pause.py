"""Auto-pause (exchange.auto_pause): a buyer whose pings mostly fail is paused as a
change by ``system``, shown in the metrics, and resumed by a probe ping once it answers
again after the cool-down, or by an operator."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import (
    ADMIN_TOKEN,
    Exchange,
    config_text,
    realtime_buyer,
    running_exchange,
)

RULES = {"error_rate": 0.5, "min_requests": 5, "cool_down_s": 2, "window_s": 5}


async def _eventually(seconds: float, holds: Callable[[], bool]) -> bool:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + seconds
    while not holds():
        if loop.time() >= give_up:
            return False
        await asyncio.sleep(0.05)
    return True


async def _changes(ex: Exchange) -> list[dict[str, object]]:
    status, body, _ = await ex.call("GET", "/v1/changes?section=buyers&id=flaky", key=ADMIN_TOKEN)
    assert status == 200
    changes: list[dict[str, object]] = body["changes"]
    return changes


async def _paused_metric(ex: Exchange) -> str:
    _, body, _ = await ex.call("GET", "/metrics", key=None)
    text = body.decode() if isinstance(body, bytes) else str(body)
    return next(
        line
        for line in text.splitlines()
        if line.startswith('exchange_buyer_paused{buyer="flaky"}')
    )


async def test_a_failing_buyer_is_paused_then_resumed_by_a_probe_after_the_cool_down(
    database_url: str,
) -> None:
    failing = SimulatedBuyerSpec("flaky", secret=b"flaky-secret", error_rate=1.0)
    steady = SimulatedBuyerSpec("steady", secret=b"steady-secret", bid_cents=(2000, 2000))
    async with BuyerSimulator([failing, steady]) as sim:
        text = config_text(
            [realtime_buyer(sim, "flaky"), realtime_buyer(sim, "steady")],
            exchange={"auto_pause": RULES},
        )
        async with running_exchange(text, database_url) as ex:
            for _ in range(8):
                await ex.ping()
            assert await _eventually(5.0, lambda: "flaky" not in ex.ctx.buyers)
            paused = (await _changes(ex))[0]
            assert (paused["by"], paused["action"]) == ("system", "auto_pause")
            assert "8 of 8 pings failed" in str(paused["reason"])
            assert (await _paused_metric(ex)).endswith(" 1.0")
            # Still failing at the end of the cool-down: the probe fails, it stays paused.
            await asyncio.sleep(RULES["cool_down_s"] + 1.5)
            assert "flaky" not in ex.ctx.buyers
            probes = sim.counters("flaky").pings
            assert probes > 8
            # Healthy again: the next probe resumes it.
            sim.set_spec("flaky", dataclasses.replace(failing, error_rate=0.0))
            assert await _eventually(RULES["cool_down_s"] + 5.0, lambda: "flaky" in ex.ctx.buyers)
            resumed = (await _changes(ex))[0]
            assert (resumed["by"], resumed["action"]) == ("system", "auto_resume")
            assert (await _paused_metric(ex)).endswith(" 0.0")


async def test_an_operator_resumes_an_auto_paused_buyer_and_it_is_judged_afresh(
    database_url: str,
) -> None:
    failing = SimulatedBuyerSpec("flaky", secret=b"flaky-secret", error_rate=1.0)
    async with BuyerSimulator([failing]) as sim:
        text = config_text(
            [realtime_buyer(sim, "flaky")],
            exchange={"auto_pause": {**RULES, "cool_down_s": 3600}},
        )
        async with running_exchange(text, database_url) as ex:
            for _ in range(6):
                await ex.ping()
            assert await _eventually(5.0, lambda: "flaky" not in ex.ctx.buyers)
            status, _, _ = await ex.call(
                "PATCH", "/v1/buyers/flaky", {"enabled": True}, key=ADMIN_TOKEN
            )
            assert status == 200
            # The failures from before the resume do not pause it again.
            await asyncio.sleep(2.0)
            assert "flaky" in ex.ctx.buyers
            assert [c["action"] for c in await _changes(ex)] == [
                "update",
                "auto_pause",
                "bootstrap",
            ][:2]


async def test_one_process_of_several_probes_a_paused_buyer_per_cool_down(
    database_url: str,
) -> None:
    failing = SimulatedBuyerSpec("flaky", secret=b"flaky-secret", error_rate=1.0)
    async with BuyerSimulator([failing]) as sim:
        text = config_text([realtime_buyer(sim, "flaky")], exchange={"auto_pause": RULES})
        async with (
            running_exchange(text, database_url) as a,
            running_exchange(text, database_url) as b,
        ):
            for _ in range(8):
                await a.ping()
            paused = lambda: "flaky" not in a.ctx.buyers and "flaky" not in b.ctx.buyers  # noqa: E731
            assert await _eventually(5.0, paused)
            before = sim.counters("flaky").pings

            def probes() -> int:
                return sim.counters("flaky").pings - before

            # Both processes see the cool-down end; one sends the probe.
            assert await _eventually(RULES["cool_down_s"] + 3.0, lambda: probes() >= 1)
            await asyncio.sleep(1.0)
            assert probes() == 1
            # The probe failed: the next is due a cool-down after it, again from one.
            assert await _eventually(RULES["cool_down_s"] + 3.0, lambda: probes() >= 2)
            await asyncio.sleep(1.0)
            assert probes() == 2
            assert paused()
            owners = {a.ctx.store.owner, b.ctx.store.owner}
            row = await a.ctx.store.pool.fetchrow(
                "SELECT probed_by FROM buyer_probes WHERE buyer_id = 'flaky'"
            )
            assert row is not None and row["probed_by"] in owners
