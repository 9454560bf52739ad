"""Shotgun delivery: a shared lead posted to all its winners at once.

Under a vertical's ``delivery: shotgun`` a lead with ``max_sales`` N > 1 is posted to the
top N buyers of the ping tree concurrently, each under its own post timeout, instead of
one after another. A buyer that rejects, errors, times out or is skipped frees its slot,
and the next buyer down the tree is posted to at once, so the slots refill until N
buyers have accepted, the tree is exhausted or the post deadline passes.

There are never more posts in flight than open slots (N minus the sales made), so no
buyer can accept a lead that has no slot left for it: no buyer is ever told it bought a
lead the exchange cannot bill. Offering the lead to one buyer (caps, the call, the sale)
is the walk's own (exchange/auction/posting.py), which records sales one at a time, so a
sale's slot (``sales.sale_seq``, unique per ping in the ledger) is the order sales
commit in, and the last slot's sale closes the post in the same statement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from exchange.core.ranking import Bid

A = TypeVar("A")


async def post_at_once(
    tree: Iterable[Bid],
    slots: int,
    offer: Callable[[Bid, float], Awaitable[A | None]],
    filled: Callable[[], int],
    deadline: float,
) -> A | None:
    """Post down ``tree`` keeping up to ``slots - filled()`` posts in flight; ``offer``
    offers the lead to one buyer with so many seconds left and returns the walk's final
    answer once the walk is complete (every slot sold, or the ledger's answer to a claim
    lost), else None. Returns the
    first final answer an offer gave, or None once no slot can be filled any more (the
    caller then settles the post from the sales made). ``deadline`` is on the loop's
    clock; no post starts after it, and each gets the time left to it.

    Every post started is waited for, also when another ends the walk or fails: each one
    is recorded, and a buyer that accepts has its sale written or refused, never left
    hanging. The first failure is raised once they are all done."""
    loop = asyncio.get_running_loop()
    waiting = iter(tree)
    running: set[asyncio.Task[A | None]] = set()
    answer: A | None = None
    failure: BaseException | None = None
    try:
        while True:
            while answer is None and failure is None and filled() + len(running) < slots:
                left_s = deadline - loop.time()
                bid = next(waiting, None) if left_s > 0 else None
                if bid is None:
                    break
                running.add(asyncio.ensure_future(offer(bid, left_s)))
            if not running:
                if failure is not None:
                    raise failure
                return answer
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                problem = task.exception()
                if problem is not None:
                    failure = failure or problem
                elif answer is None:
                    answer = task.result()
    finally:
        # Only when this walk itself is cancelled (its post abandoned): its posts go too.
        for task in running:
            task.cancel()
