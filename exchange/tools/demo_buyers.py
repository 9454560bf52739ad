"""The demo's simulated buyers, in a process of their own, so that their CPU is theirs
and can be told apart from the exchange's.

    python -m exchange.tools.demo_buyers --buyers N

Serves the market's buyers (exchange/tools/demo_market.py) on free loopback ports, then
writes one JSON line, ``{"config": <the exchange's YAML>}``, and serves until SIGTERM or
until its standard input closes (the demo that started it is gone)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import orjson

from exchange.server.supervisor import install_uvloop
from exchange.tools.demo_market import buyer_specs, demo_config, fixed_buyer_spec
from exchange.tools.demo_processes import stop_when_parent_goes
from exchange.tools.simulator import BuyerSimulator


async def serve(count: int) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    specs = buyer_specs(count)
    async with BuyerSimulator([*specs, fixed_buyer_spec()], record=False) as sim:
        sys.stdout.buffer.write(orjson.dumps({"config": demo_config(sim, specs)}) + b"\n")
        sys.stdout.flush()
        async with stop_when_parent_goes(stopping):
            await stopping.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exchange.tools.demo_buyers")
    parser.add_argument("--buyers", type=int, default=8)
    args = parser.parse_args(argv)
    install_uvloop()
    asyncio.run(serve(args.buyers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
