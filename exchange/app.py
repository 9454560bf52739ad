"""The composition root: builds the database pool, store, batch writer, transport,
metrics and context from a loaded config, and wires the routes. Nothing else creates
live resources."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from exchange.api import admin as admin_api
from exchange.api import buyer as buyer_api
from exchange.api import openapi
from exchange.api import operator as operator_api
from exchange.api import pool as pool_api
from exchange.api import search as search_api
from exchange.api import seller as seller_api
from exchange.api import suppression as suppression_api
from exchange.api.common import CTX, LIMITS, json_response
from exchange.api.errors import Handler, error_middleware, error_response
from exchange.auction import acceptance
from exchange.auction.autopause import AutoPauser
from exchange.auction.context import ExchangeContext
from exchange.auction.delivery import keep_releasing
from exchange.auction.live import LiveSettings
from exchange.auction.offers import keep_pool
from exchange.core.config import LoadedConfig
from exchange.ledger.batch import BatchWriter
from exchange.ledger.faults import DATABASE_DOWN
from exchange.ledger.partitions import utc_day
from exchange.ledger.pool import create_pool, migrate
from exchange.ledger.retention import RetentionPolicy, keep_ledger, upkeep_once
from exchange.ledger.settings import SettingsLedger
from exchange.ledger.store import Store
from exchange.telemetry.looplag import LagMonitor
from exchange.telemetry.metrics import Metrics
from exchange.transport.base import Transport
from exchange.transport.h1 import H1Transport

log = structlog.get_logger("exchange.app")
HEALTH_INTERVAL_S = 1.0
# How long the start waits for the batch writer to warm its statements.
WARM_S = 2.0


@dataclass(frozen=True)
class AppOptions:
    database_url: str
    batch_interval_s: float = 0.05
    # This process's name in the post claims it makes (Store.owner); None: a random one.
    owner: str | None = None
    # Where this process keeps files (serve --data-dir): ledger rows it could not write
    # before stopping go to its dead-letters/ folder. None: the system's temporary one.
    data_dir: str | None = None


def _db_timeout_s(loaded: LoadedConfig) -> float:
    settings = loaded.settings
    return (settings.db_timeout_ms or settings.tmax_ms) / 1000


def build_transport(loaded: LoadedConfig) -> Transport:
    return H1Transport(max_response_bytes=loaded.settings.max_response_bytes)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    if not ctx.health.ready:
        return error_response(
            503, "not_ready", "the ledger database is unreachable", headers={"Retry-After": "1"}
        )
    if ctx.writer.stalled:
        return error_response(
            503, "not_ready", "the ledger cannot be written", headers={"Retry-After": "1"}
        )
    return json_response({"status": "ready", "config": ctx.loaded.source})


async def metrics_endpoint(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    ctx.metrics.record_ledger_queue(ctx.writer.queued)
    ctx.metrics.record_ledger_writing(not ctx.writer.stalled)
    _set_cap_gauges(ctx)
    return web.Response(
        body=await ctx.metrics.exposition(),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


async def _watch_database(ctx: ExchangeContext) -> None:
    """Keep the ledger's health ready only while the database answers; asyncpg's pool reconnects
    by itself once it is back. Also reports whether the batch writer writes (/readyz
    reads ``writer.stalled`` itself, at once)."""
    writing = True
    while True:
        if writing != (not ctx.writer.stalled):
            writing = not writing
            log.warning("ledger_writer_changed", writing=writing, queued=ctx.writer.queued)
        ctx.metrics.record_ledger_writing(writing)
        try:
            async with asyncio.timeout(HEALTH_INTERVAL_S):
                await ctx.store.heartbeat()
            ready = True
        except (*DATABASE_DOWN, asyncpg.PostgresError):
            ready = False
        if ctx.health.mark(ready):
            log.warning("database_ready_changed", ready=ready)
        ctx.metrics.record_database_up(ready)
        await asyncio.sleep(HEALTH_INTERVAL_S)


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answers by route template (never the raw path: ids would explode the label set).
    Also starts each request with a clean log context: one connection's task serves many
    keep-alive requests, and one request's ids must not label the next one's lines."""
    structlog.contextvars.clear_contextvars()
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    request.app[CTX].metrics.record_http_answer(route, response.status)
    return response


CAP_REFRESH_S = 1.0


def _set_cap_gauges(ctx: ExchangeContext) -> None:
    """What each capped buyer can still take, from this process's view of the counters."""
    now = ctx.clock.now()
    metrics = ctx.metrics
    for buyer_id, runtime in ctx.buyers.items():
        caps = runtime.rules.caps
        if caps is None:
            continue
        for window in caps.windows(now):
            key = (buyer_id, window.limit.period, window.start)
            sales, spent = ctx.caps.counts.get(key, (0, 0))
            period = window.limit.period
            if window.limit.max_count is not None:
                left = max(0, window.limit.max_count - sales)
                metrics.record_cap_left(buyer_id, period, left)
            if window.limit.max_spend_cents is not None:
                left_cents = max(0, window.limit.max_spend_cents - spent)
                metrics.record_budget_left(buyer_id, period, left_cents)


async def _refresh_caps(ctx: ExchangeContext) -> None:
    """Keep this process's view of cap counts close to the ledger, which every process
    writes; the exact check is the reservation at post time."""
    while True:
        # While the database is away the watcher reports it and the last view stays.
        # (Started whatever the config: a live change may give a buyer caps.)
        with contextlib.suppress(*DATABASE_DOWN):
            if any(b.rules.caps is not None for b in ctx.buyers.values()):
                since = ctx.clock.now() - timedelta(days=32)
                ctx.caps.replace(await ctx.store.cap_counts(since))
        await asyncio.sleep(CAP_REFRESH_S)


def _retention(ctx: ExchangeContext) -> RetentionPolicy:
    settings = ctx.loaded.settings
    return RetentionPolicy(settings.retention_days, settings.archive_before_drop)


METRICS_APPLY_S = 1.0


async def _apply_metrics(metrics: Metrics) -> None:
    """Deferred metric updates reach the series at least this often (a scrape of this
    process applies them at once; one of another worker does not)."""
    while True:
        await asyncio.sleep(METRICS_APPLY_S)
        metrics.apply_pending()


# Long on purpose: the composition root builds every live part in order and tears them
# down in reverse, in one place a reader can check at a glance.
def create_app(
    loaded: LoadedConfig, options: AppOptions, metrics: Metrics | None = None
) -> web.Application:
    app = web.Application(
        middlewares=[count_requests, error_middleware],
        client_max_size=loaded.settings.max_body_bytes,
    )
    app[LIMITS] = {}
    metrics = metrics if metrics is not None else Metrics()
    metrics.start_series(loaded.config)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(options.database_url)
        await migrate(pool)
        # Batched rows commit without waiting for the disk: the ping row a seller's answer
        # waits on costs a round trip, not an fsync (docs/reliability.md has the trade).
        ledger_pool = await create_pool(
            options.database_url, min_size=1, max_size=2, synchronous_commit=False
        )
        data_dir = Path(options.data_dir) if options.data_dir else None
        writer = BatchWriter(
            ledger_pool, interval_s=options.batch_interval_s, on_flush=metrics.record_flush,
            on_reject=metrics.record_rejected,
            dead_letter_dir=data_dir / "dead-letters" if data_dir else None,
        )  # fmt: skip
        # Best effort: a ledger slow or locked at start delays the first commits, not the start.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(WARM_S):
                await writer.warm()
        writer.start()
        transport = build_transport(loaded)
        metrics.watch_transport(transport.stats)
        store = Store(pool, _db_timeout_s(loaded), owner=options.owner)
        ctx = ExchangeContext(loaded=loaded, store=store, writer=writer, transport=transport,
                              metrics=metrics, lag=LagMonitor(metrics.record_lag))  # fmt: skip
        # On record as alive before the first claim: a claim whose process has no
        # heartbeat is taken as abandoned.
        await store.heartbeat()
        # The newest stored buyers and sellers, in force before the first request.
        settings_ledger = SettingsLedger(pool)
        live = LiveSettings(ctx, settings_ledger, options.database_url)
        await live.start()
        app[admin_api.LIVE] = live
        rules = loaded.settings.auto_pause
        pauser = AutoPauser(ctx, live, settings_ledger, rules) if rules is not None else None
        if pauser is not None:
            pauser.start()
        ctx.lag.start()
        metrics.record_database_up(True)
        metrics.record_ledger_writing(True)
        app[CTX] = ctx
        loop = asyncio.get_running_loop()
        background = [
            loop.create_task(_watch_database(ctx)),
            loop.create_task(_apply_metrics(metrics)),
        ]
        background.append(loop.create_task(_refresh_caps(ctx)))
        # The lead pool's expiry, and reservations of people whose offers ran out.
        background.append(loop.create_task(keep_pool(ctx)))
        background.append(loop.create_task(keep_releasing(ctx)))  # held leads' delivery
        # The ledger's upkeep (exchange/ledger/retention.py): once now, so that today's
        # partitions exist before the first ping, then every retention.INTERVAL_S.
        metrics.record_ledger_upkeep(
            await upkeep_once(pool, utc_day(ctx.clock.now()), _retention(ctx))
        )
        upkeep = keep_ledger(
            pool, lambda: utc_day(ctx.clock.now()), lambda: _retention(ctx),
            metrics.record_ledger_upkeep,
        )  # fmt: skip
        background.append(loop.create_task(upkeep))
        background.append(
            loop.create_task(
                acceptance.keep_fresh(
                    ctx.acceptance, ctx.store, lambda: ctx.loaded.config, ctx.clock.now
                )
            )
        )
        # Everything built so far lives as long as the process: keep it out of every
        # future garbage collection's scan.
        gc.collect()
        gc.freeze()
        log.info("exchange_ready", config=loaded.source, buyers=len(ctx.buyers))
        try:
            yield
        finally:
            ctx.lag.stop()
            if pauser is not None:
                await pauser.stop()
            await live.stop()
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # Claims of failed walks still being closed get a moment before the pool goes
            # (else they age out: another process closes them after post_deadline_ms + 5 s).
            await ctx.claim_closers.finish(timeout_s=1.0)
            await writer.close()
            with contextlib.suppress(Exception):  # else the row ages: claims wait 5 s more
                await store.leave()
            await transport.close()
            await ledger_pool.close()
            await pool.close()
            metrics.apply_pending()

    app.cleanup_ctx.append(lifecycle)
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics_endpoint),
            *seller_api.routes(),
            *operator_api.routes(),
            *admin_api.routes(),
            *search_api.routes(),
            *buyer_api.routes(),
            *suppression_api.routes(),
            *pool_api.routes(),
            *openapi.routes(),
        ]
    )
    return app
