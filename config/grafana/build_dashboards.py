"""The exchange's Grafana dashboard, as code.

Built with Grafana's own builder library (grafana-foundation-sdk, its build for Grafana
11.6) and written to ``config/grafana/dashboards/lead-exchange.json``, which Grafana
loads by itself through ``config/grafana/provisioning/``. The JSON is checked in, so
Grafana and the tests need only the file; edit this script, never the JSON, then::

    pip install 'grafana-foundation-sdk==1769699379!11.6.0'
    python config/grafana/build_dashboards.py          # rewrite the JSON
    python config/grafana/build_dashboards.py --check  # exit 1 if the JSON is stale

Queries use only metric names from exchange/telemetry/collectors.py:
tests/telemetry/test_dashboards.py checks them against a live /metrics, and
tests/telemetry/test_prometheus_live.py runs every one against a real Prometheus scraping
a live exchange. docs/observability.md
says what each panel answers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.builders.common import ReduceDataOptions, VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    LegendDisplayMode,
    LegendPlacement,
    VisibilityMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Panel,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "dashboards" / "lead-exchange.json"

# The datasource provisioned by provisioning/datasources/prometheus.yml.
DATASOURCE_UID = "prometheus"
PROMETHEUS = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
# The ledger's PostgreSQL (provisioning/datasources/ledger.yml), read as the role
# ledger_reader, which may only call the report functions granted to it: for figures
# whose keys are unbounded (sub-IDs), which must never become Prometheus labels.
LEDGER_UID = "ledger"
LEDGER = DataSourceRef(type_val="grafana-postgresql-datasource", uid=LEDGER_UID)

RATE = "$__rate_interval"
RANGE = "$__range"  # tables summarise the dashboard's whole time range
V = 'vertical=~"$vertical"'
B = 'buyer=~"$buyer"'
S = 'seller=~"$seller"'
REQUESTS = "exchange_buyer_requests_total"
# Ping outcomes of a buyer that was asked (fixed-price buyers' bids count as asked).
ASKED = 'outcome=~"bid|no_bid|timeout|error|below_floor"'
BIDS = 'outcome=~"bid|below_floor"'
EXCLUSIONS = 'outcome=~"filtered|capped|off_schedule|duplicate|seller_blocked"'

PanelBuilder = Builder[Panel]


# ---------------------------------------------------------------------------------------
# Panel shapes


def query(expr: str, legend: str = "__auto") -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).datasource(PROMETHEUS)


def ratio(numerator: str, denominator: str) -> str:
    return f"{numerator}\n/\n{denominator}"


def quantiles(metric: str, selector: str, by: str = "") -> list[Dataquery]:
    """p50/p95/p99 of a histogram, per ``by`` label if given."""
    group = f"{by}, le" if by else "le"
    legend = f"{{{{{by}}}}} " if by else ""
    return [
        query(
            f"histogram_quantile({q}, sum by ({group}) "
            f"(rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"{legend}p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def graph(
    title: str, description: str, unit: str, targets: list[Dataquery], width: int = 12
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .height(8)
        .span(width)
        .fill_opacity(10)
        .show_points(VisibilityMode.NEVER)
        .legend(
            VizLegendOptions()
            .display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
    )
    for index, target in enumerate(targets):
        panel = panel.with_target(target.ref_id(chr(ord("A") + index)))
    return panel


def single(
    title: str, description: str, unit: str, expr: str, steps: list[Threshold] | None = None
) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .height(4)
        .span(4)
        .no_value("0")
        .graph_mode(BigValueGraphMode.AREA)
        .color_mode(BigValueColorMode.VALUE)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(
            ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps(steps or [Threshold(value=None, color="text")])
        )
        .with_target(query(expr).ref_id("A"))
    )


def summary_table(
    title: str, description: str, key: str, columns: list[tuple[str, str, str]]
) -> table.Panel:
    """One row per ``key`` (buyer or seller). Each column is (header, unit, an instant
    query over the dashboard's time range grouped by ``key``), merged on ``key``."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .height(9)
        .span(24)
        .filterable(True)
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
    )
    renames: dict[str, str] = {}
    for index, (header, unit, expr) in enumerate(columns):
        ref = chr(ord("A") + index)
        panel = panel.with_target(
            Dataquery()
            .expr(expr)
            .ref_id(ref)
            .instant()
            .format(PromQueryFormat.TABLE)
            .datasource(PROMETHEUS)
        )
        renames[f"Value #{ref}"] = header
        panel = panel.override_by_name(header, [DynamicConfigValue(id_val="unit", value=unit)])
    organize = {
        "excludeByName": {"Time": True},
        "indexByName": {
            key: 0,
            **{f"Value #{chr(ord('A') + i)}": i + 1 for i in range(len(columns))},
        },
        "renameByName": renames,
    }
    return panel.with_transformation(DataTransformerConfig(id_val="organize", options=organize))


class LedgerQuery(Dataquery):
    """A SQL query to the ledger's PostgreSQL (the builder library has no PostgreSQL
    query type); ``raw_sql`` may use Grafana's SQL macros ($__timeFrom(), $__timeTo())."""

    def __init__(self, ref_id: str, raw_sql: str) -> None:
        self.ref_id, self.raw_sql = ref_id, raw_sql

    def to_json(self) -> dict[str, Any]:
        return {
            "datasource": {"type": LEDGER.type_val, "uid": LEDGER.uid},
            "editorMode": "code",
            "format": "table",
            "rawQuery": True,
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class LedgerQueryBuilder(Builder[Dataquery]):
    def __init__(self, ref_id: str, raw_sql: str) -> None:
        self._query = LedgerQuery(ref_id, raw_sql)

    def build(self) -> Dataquery:
        return self._query


def ledger_table(
    title: str, description: str, raw_sql: str, columns: list[tuple[str, str]]
) -> table.Panel:
    """A table of one SQL query's rows; ``columns`` gives units by column name."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(LEDGER)
        .height(10)
        .span(24)
        .filterable(True)
        .with_target(LedgerQueryBuilder("A", raw_sql))
    )
    for name, unit in columns:
        panel = panel.override_by_name(name, [DynamicConfigValue(id_val="unit", value=unit)])
    return panel


def label_variable(name: str, label: str, metric: str) -> QueryVariable:
    return (
        QueryVariable(name)
        .label(label)
        .datasource(PROMETHEUS)
        .query({"query": f"label_values({metric}, {name})", "refId": f"{name}-values"})
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def per_buyer(outcomes: str, phase: str = "ping", window: str = RATE, fn: str = "rate") -> str:
    selector = f'phase="{phase}", {outcomes}, {B}' if outcomes else f'phase="{phase}", {B}'
    return f"sum by (buyer) ({fn}({REQUESTS}{{{selector}}}[{window}]))"


def share(part: str, whole: str) -> str:
    """``part / whole`` per label set, 0 (not missing) where ``part`` has no series: a
    buyer that never timed out shows 0%, not a blank."""
    return ratio(f"(\n{part}\nor 0 * {whole}\n)", whole)


def share_of_asked(outcomes: str, window: str = RATE) -> str:
    """A buyer's share of the pings it was asked that ended in ``outcomes``."""
    return share(per_buyer(outcomes, window=window), per_buyer(ASKED, window=window))


def per_seller(metric: str, extra: str = "", window: str = RATE, fn: str = "rate") -> str:
    selector = f"{S}, {extra}" if extra else S
    return f"sum by (seller) ({fn}({metric}{{{selector}}}[{window}]))"


# ---------------------------------------------------------------------------------------
# Rows: each is a title and its panels, laid out left to right.


def overview() -> Iterator[PanelBuilder]:
    pings = f"sum(rate(exchange_pings_total{{{V}}}[{RATE}]))"
    no_bids = f'sum(rate(exchange_pings_total{{{V}, status="no_bid"}}[{RATE}]))'
    sales = f"sum(rate(exchange_sales_total{{{V}}}[{RATE}]))"
    revenue = f"sum(rate(exchange_revenue_dollars_total{{{B}}}[{RATE}]))"
    payout = f"sum(rate(exchange_payout_dollars_total{{{S}}}[{RATE}]))"
    margin = (
        f"60 * (sum(rate(exchange_revenue_dollars_total[{RATE}]))"
        f" - sum(rate(exchange_payout_dollars_total[{RATE}])))"
    )
    zero_is_good = [Threshold(value=None, color="green"), Threshold(value=1, color="red")]
    attempts_mean = ratio(
        f"sum(rate(exchange_post_attempts_per_sale_sum[{RATE}]))",
        f"sum(rate(exchange_post_attempts_per_sale_count[{RATE}]))",
    )

    yield single("Pings / s", "Pings answered per second.", "reqps", pings)
    yield single(
        "Fill rate",
        "Leads sold per ping answered (sales / pings).",
        "percentunit",
        ratio(sales, pings),
    )
    yield single(
        "Revenue / min",
        "What buyers pay for the leads sold, per minute.",
        "currencyUSD",
        f"60 * {revenue}",
    )
    yield single(
        "Margin / min",
        "Revenue minus seller payouts, per minute: what the exchange keeps.",
        "currencyUSD",
        margin,
    )
    yield single(
        "Deadline misses",
        "Ping answers ready later than tmax + 5 ms over the "
        "selected time range. Anything above 0 is worth a look.",
        "short",
        f"sum(increase(exchange_deadline_misses_total{{{V}}}[{RANGE}]))",
        zero_is_good,
    )
    yield single(
        "In-flight auctions",
        "Auctions waiting on buyers right now.",
        "short",
        "sum(exchange_inflight_auctions)",
    )
    yield graph(
        "Pings / s by answer",
        "Pings answered per second by what the seller was told: bid (a price) or no_bid.",
        "reqps",
        [query(f"sum by (status) (rate(exchange_pings_total{{{V}, {S}}}[{RATE}]))", "{{status}}")],
    )
    yield graph(
        "Fill rate and no-bid share",
        "Fill rate: sales / pings. No-bid share: pings no buyer bid on above the floor.",
        "percentunit",
        [query(ratio(sales, pings), "fill rate"), query(ratio(no_bids, pings), "no-bid share")],
    )
    yield graph(
        "Auction duration against tmax",
        "Ping received to answer ready (p50, p95, "
        "p99) against the configured tmax (exchange_tmax_seconds). p99 at tmax means "
        "buyers time out; above it the exchange itself is late.",
        "s",
        [
            *quantiles("exchange_auction_duration_seconds", V),
            query("max(exchange_tmax_seconds)", "tmax"),
        ],
    )
    yield graph(
        "Deadline misses / s",
        "Ping answers later than tmax + 5 ms, by vertical: an overloaded or stalled exchange.",
        "short",
        [
            query(
                f"sum by (vertical) (rate(exchange_deadline_misses_total{{{V}}}[{RATE}]))",
                "{{vertical}}",
            )
        ],
    )
    yield graph(
        "Revenue and payout / min",
        "Buyer revenue and seller payouts per minute.",
        "currencyUSD",
        [query(f"60 * {revenue}", "revenue"), query(f"60 * {payout}", "payout")],
    )
    yield graph(
        "Sold and unsold posts / s",
        "Posts that ended sold or unsold, by vertical.",
        "reqps",
        [
            query(
                f"sum by (vertical) (rate(exchange_sales_total{{{V}}}[{RATE}]))",
                "sold {{vertical}}",
            ),
            query(
                f"sum by (vertical) (rate(exchange_unsold_posts_total{{{V}}}[{RATE}]))",
                "unsold {{vertical}}",
            ),
        ],
    )
    yield graph(
        "Suppressed leads / min",
        "Posted leads refused before any buyer saw them because a phone or email is on one "
        "of the vertical's suppression lists (unsold, reason suppressed), by vertical and "
        "the list that matched. Part of the unsold posts.",
        "short",
        [
            query(
                f"60 * sum by (vertical, list) "
                f"(rate(exchange_leads_suppressed_total{{{V}}}[{RATE}]))",
                "{{vertical}} {{list}}",
            )
        ],
    )
    yield graph(
        "In-flight auctions",
        "Auctions waiting on buyers, summed over instances.",
        "short",
        [query("sum(exchange_inflight_auctions)", "in flight")],
        width=8,
    )
    yield graph(
        "Exchange overhead",
        "Auction time not spent waiting on buyers: screening, ranking, recording.",
        "s",
        quantiles("exchange_auction_overhead_seconds", V),
        width=8,
    )
    yield graph(
        "Post attempts per sale",
        "Buyers posted to before one accepted: 1 is the "
        "top bid, more is fallback down the ping tree.",
        "short",
        [*quantiles("exchange_post_attempts_per_sale", ""), query(attempts_mean, "mean")],
        width=8,
    )
    yield graph(
        "Lead score",
        "The lead score of pings (0-100, from the vertical's score rules), by vertical: "
        "the median and the mean. Verticals without score rules have none.",
        "short",
        [
            *quantiles("exchange_lead_score", V, by="vertical")[:1],
            query(
                ratio(
                    f"sum by (vertical) (rate(exchange_lead_score_sum{{{V}}}[{RATE}]))",
                    f"sum by (vertical) (rate(exchange_lead_score_count{{{V}}}[{RATE}]))",
                ),
                "mean {{vertical}}",
            ),
        ],
    )


def buyers() -> Iterator[PanelBuilder]:
    latency = "exchange_buyer_latency_seconds_bucket"
    columns = [
        ("Pings asked", "short", per_buyer(ASKED, window=RANGE, fn="increase")),
        ("Bid rate", "percentunit", share_of_asked(BIDS, RANGE)),
        ("Timeout rate", "percentunit", share_of_asked('outcome="timeout"', RANGE)),
        ("Error rate", "percentunit", share_of_asked('outcome="error"', RANGE)),
        (
            "Win rate (sold / bids)",
            "percentunit",
            share(
                per_buyer('outcome="accepted"', "post", RANGE),
                per_buyer('outcome="bid"', window=RANGE),
            ),
        ),
        (
            "p95 ping latency",
            "s",
            f'histogram_quantile(0.95, sum by (buyer, le) (rate({latency}{{phase="ping", {B}}}'
            f"[{RANGE}])))",
        ),
        (
            "Post acceptance",
            "percentunit",
            share(per_buyer('outcome="accepted"', "post", RANGE), per_buyer("", "post", RANGE)),
        ),
        (
            "Auction win rate",
            "percentunit",
            share(
                f"sum by (buyer) (increase(exchange_buyer_wins_total{{{B}}}[{RANGE}]))",
                per_buyer(ASKED, window=RANGE, fn="increase"),
            ),
        ),
        (
            "Cap left (leads)",
            "short",
            f"min by (buyer) (exchange_buyer_cap_remaining_leads{{{B}}})",
        ),
        (
            "Excluded (filters, caps, schedule)",
            "short",
            per_buyer(EXCLUSIONS, window=RANGE, fn="increase"),
        ),
        (
            "Spend",
            "currencyUSD",
            f"sum by (buyer) (increase(exchange_revenue_dollars_total{{{B}}}[{RANGE}]))",
        ),
    ]

    yield summary_table(
        "Buyers (selected time range)",
        "One row per buyer over the "
        "dashboard's time range. Bid, timeout and error rates are shares of "
        "the pings the buyer was asked; win rate is sales per bid; post "
        "acceptance is sales per post sent (low: it bids, then rejects).",
        "buyer",
        columns,
    )
    yield graph(
        "Bid rate by buyer",
        "Share of pings asked that the buyer bid on.",
        "percentunit",
        [query(share_of_asked(BIDS), "{{buyer}}")],
    )
    yield graph(
        "Ping timeout rate by buyer",
        "Share of pings asked that the buyer did not "
        "answer within its timeout_ms or the auction's tmax.",
        "percentunit",
        [query(share_of_asked('outcome="timeout"'), "{{buyer}}")],
    )
    yield graph(
        "p95 ping latency by buyer",
        "95th percentile of the time a buyer takes to "
        "answer a ping (timeouts count at the deadline).",
        "s",
        [
            query(
                f"histogram_quantile(0.95, sum by (buyer, le) (rate({latency}"
                f'{{phase="ping", {B}}}[{RATE}])))',
                "{{buyer}}",
            )
        ],
    )
    yield graph(
        "Post acceptance rate by buyer",
        "Share of posts the buyer accepted. Low means it bids, then rejects the lead.",
        "percentunit",
        [query(share(per_buyer('outcome="accepted"', "post"), per_buyer("", "post")), "{{buyer}}")],
    )
    yield graph(
        "Spend by buyer / min",
        "What each buyer pays per minute.",
        "currencyUSD",
        [
            query(
                f"60 * sum by (buyer) (rate(exchange_revenue_dollars_total{{{B}}}[{RATE}]))",
                "{{buyer}}",
            )
        ],
    )
    yield graph(
        "Exclusions by reason / s",
        "Buyers left out of an auction before being "
        "asked (filters, caps, schedule, duplicates, seller lists), and bids under "
        "the seller's floor.",
        "reqps",
        [
            query(
                f'sum by (outcome) (rate({REQUESTS}{{phase="ping", '
                'outcome=~"filtered|capped|off_schedule|duplicate|seller_blocked'
                f'|below_floor", {B}}}[{RATE}]))',
                "{{outcome}}",
            )
        ],
    )
    yield graph(
        "Post outcomes by buyer / s",
        "Posts to each buyer by outcome: accepted, rejected, timeout, error.",
        "reqps",
        [
            query(
                f'sum by (buyer, outcome) (rate({REQUESTS}{{phase="post", {B}}}[{RATE}]))',
                "{{buyer}} {{outcome}}",
            )
        ],
    )
    yield graph(
        "Bid breaches by buyer / h",
        "Posts a buyer rejected for a reason its vertical's reject_reasons_allowed does "
        "not list, or for none: binding bids broken (only where a vertical lists reasons). "
        "GET /v1/reports/buyers has the counts for a billing period.",
        "short",
        [
            query(
                f"3600 * sum by (buyer) (rate(exchange_bid_breaches_total{{{B}}}[{RATE}]))",
                "{{buyer}}",
            )
        ],
    )
    yield graph(
        "Paused buyers",
        "Buyers paused in the live settings (enabled: false), by an operator or by "
        "auto-pause (exchange.auto_pause; alert ExchangeBuyerAutoPaused). "
        "lead-exchange admin changes --id BUYER says who paused it and why. 1: paused.",
        "short",
        [query(f"max by (buyer) (exchange_buyer_paused{{{B}}})", "{{buyer}}")],
    )
    yield graph(
        "p95 post latency by buyer",
        "95th percentile of the time a buyer takes to answer a post.",
        "s",
        [
            query(
                f"histogram_quantile(0.95, sum by (buyer, le) (rate({latency}"
                f'{{phase="post", {B}}}[{RATE}])))',
                "{{buyer}}",
            )
        ],
    )
    yield graph(
        "Buyer requests by connection / s",
        "Requests sent to buyer endpoints (pings and posts, every buyer), by the "
        "connection each went out on: reused (kept alive) or opened for it. Opened "
        "connections cost a TCP (and TLS) handshake inside the buyer's time; a rise "
        "means a buyer closes keep-alive connections or answers past its deadline.",
        "reqps",
        [
            query(
                f"sum by (event) (rate(exchange_buyer_connections_total[{RATE}]))",
                "{{event}}",
            )
        ],
    )


def sellers() -> Iterator[PanelBuilder]:
    pings = "exchange_pings_total"
    payout = "exchange_payout_dollars_total"
    bid = f'{V}, status="bid"'
    columns = [
        ("Pings", "short", per_seller(pings, V, RANGE, "increase")),
        (
            "Bid share",
            "percentunit",
            share(per_seller(pings, bid, RANGE), per_seller(pings, V, RANGE)),
        ),
        ("Payout", "currencyUSD", per_seller(payout, window=RANGE, fn="increase")),
        (
            "Payout per ping",
            "currencyUSD",
            ratio(per_seller(payout, window=RANGE), per_seller(pings, V, RANGE)),
        ),
    ]

    yield summary_table(
        "Sellers (selected time range)",
        "One row per seller over the "
        "dashboard's time range: pings sent, the share answered with a bid, "
        "payout owed and payout per ping.",
        "seller",
        columns,
    )
    yield graph(
        "Pings / s by seller",
        "Pings answered per second, by seller.",
        "reqps",
        [query(per_seller(pings, V), "{{seller}}")],
        width=8,
    )
    yield graph(
        "Bid share by seller",
        "Share of a seller's pings answered with a bid.",
        "percentunit",
        [query(share(per_seller(pings, bid), per_seller(pings, V)), "{{seller}}")],
        width=8,
    )
    yield graph(
        "Payout by seller / min",
        "What the exchange owes each seller per minute.",
        "currencyUSD",
        [query(f"60 * {per_seller(payout)}", "{{seller}}")],
        width=8,
    )
    yield ledger_table(
        "Sub-IDs by seller (selected time range)",
        "One row per seller and sub-ID (a seller's traffic source; empty: pings that named "
        "none) over the dashboard's time range, read from the ledger (sub-IDs are "
        "unbounded, so they are not Prometheus labels): pings, bids, posts, sales, revenue, "
        "payout, returns. Covers exchange.retention_days at most. The same figures as "
        "GET /v1/reports/sellers?by=sub_id.",
        SUB_ID_SQL,
        [("revenue", "currencyUSD"), ("payout", "currencyUSD"), ("reversed", "currencyUSD")],
    )


# The ledger function of migration 0022, granted to ledger_reader (migration 0024).
SUB_ID_SQL = (
    "SELECT seller_id AS seller, coalesce(sub_id, '') AS sub_id, pings, bids, posts, sales,\n"
    "       revenue_cents / 100.0 AS revenue, payout_cents / 100.0 AS payout, returns,\n"
    "       reversed_cents / 100.0 AS reversed\n"
    "FROM seller_sub_id_report($__timeFrom()::timestamptz, $__timeTo()::timestamptz)\n"
    "ORDER BY 1, 2"
)


def pool() -> Iterator[PanelBuilder]:
    """The lead pool (docs/distribution.md): what waits in it, how old, how fast it sells."""
    yield graph(
        "Pool offers by vertical",
        "Unsold leads waiting in each vertical's pool (read from the ledger by every "
        "process's sweep: max over processes).",
        "short",
        [query(f"max by (vertical) (exchange_pool_offers{{{V}}})", "{{vertical}}")],
        width=8,
    )
    yield graph(
        "Oldest pool offer",
        "Age of the oldest open offer per vertical; it leaves the pool at max_age_hours.",
        "s",
        [
            query(
                f"max by (vertical) (exchange_pool_oldest_offer_age_seconds{{{V}}})",
                "{{vertical}}",
            )
        ],
        width=8,
    )
    yield graph(
        "Pool claims, entries and expiries / min",
        "Leads claimed per minute by buyer, against leads entering the pool and leaving "
        "it unclaimed.",
        "short",
        [
            query(
                f"60 * sum by (buyer) (rate(exchange_pool_claims_total{{{V}}}[{RATE}]))",
                "claimed by {{buyer}}",
            ),
            query(f"60 * sum (rate(exchange_pool_entries_total{{{V}}}[{RATE}]))", "entered"),
            query(f"60 * sum (rate(exchange_pool_expired_total{{{V}}}[{RATE}]))", "expired"),
        ],
        width=8,
    )


def holds() -> Iterator[PanelBuilder]:
    """Delayed delivery (docs/distribution.md): leads held for buyers off schedule."""
    yield graph(
        "Held leads by vertical",
        "Leads held for buyers that were off schedule, waiting for the first of them to "
        "open (read from the ledger by every process's release pass: max over processes).",
        "short",
        [query(f"max by (vertical) (exchange_held_leads{{{V}}})", "{{vertical}}")],
        width=12,
    )
    yield graph(
        "Holds / min by outcome",
        "Leads held per minute, against holds ending sold (delivered when a buyer opened) "
        "and expired (no buyer bought it within hold_hours: unsold, hold_expired).",
        "short",
        [
            query(
                f"60 * sum by (outcome) (rate(exchange_holds_total{{{V}}}[{RATE}]))",
                "{{outcome}}",
            )
        ],
        width=12,
    )


def errors() -> Iterator[PanelBuilder]:
    http = "exchange_http_requests_total"
    up_down = ValueMap(
        {
            "0": ValueMappingResult(text="DOWN", color="red", index=0),
            "1": ValueMappingResult(text="UP", color="green", index=1),
        }
    )

    yield graph(
        "Buyer timeouts / s",
        "Pings and posts a buyer did not answer in time, by buyer and phase.",
        "reqps",
        [
            query(
                f'sum by (buyer, phase) (rate({REQUESTS}{{outcome="timeout", {B}}}[{RATE}]))',
                "{{buyer}} {{phase}}",
            )
        ],
    )
    yield graph(
        "Buyer errors / s",
        "Buyer answers that were errors (non-2xx, bad JSON, "
        "refused connections), by buyer and phase.",
        "reqps",
        [
            query(
                f'sum by (buyer, phase) (rate({REQUESTS}{{outcome="error", {B}}}[{RATE}]))',
                "{{buyer}} {{phase}}",
            )
        ],
    )
    yield graph(
        "API answers by status code / s",
        "Seller and operator API answers by HTTP status code.",
        "reqps",
        [query(f"sum by (code) (rate({http}[{RATE}]))", "{{code}}")],
    )
    yield graph(
        "API errors by route / s",
        "4xx and 5xx answers by route and code. A 5xx is "
        "a bug: the exchange never answers 500 to anything a client sent.",
        "reqps",
        [
            query(
                f'sum by (route, code) (rate({http}{{code=~"4..|5.."}}[{RATE}]))',
                "{{route}} {{code}}",
            )
        ],
    )
    yield (
        single(
            "Database up",
            "UP while every exchange instance reaches the ledger database; "
            "DOWN as soon as one cannot.",
            "none",
            "min(exchange_db_up)",
            [Threshold(value=None, color="red"), Threshold(value=1, color="green")],
        )
        .mappings([up_down])
        .color_mode(BigValueColorMode.BACKGROUND)
        .no_value("no data")
        .span(6)
        .height(8)
    )
    yield graph(
        "Ledger queue depth",
        "Ledger rows waiting in the batch writer's queue. It "
        "is bounded: when full, auctions wait for the database.",
        "short",
        [query("sum(exchange_db_queue_rows)", "queued rows")],
        width=6,
    )
    yield graph(
        "Ledger write latency",
        "Time to write one batch (or one sale) to the database, p50 and p99 by table.",
        "s",
        [
            query(
                "histogram_quantile(0.5, sum by (table, le) "
                f"(rate(exchange_db_write_seconds_bucket[{RATE}])))",
                "{{table}} p50",
            ),
            query(
                "histogram_quantile(0.99, sum by (table, le) "
                f"(rate(exchange_db_write_seconds_bucket[{RATE}])))",
                "{{table}} p99",
            ),
        ],
        width=6,
    )
    yield graph(
        "Ledger rows written / s",
        "Rows written to the ledger, by table.",
        "short",
        [query(f"sum by (table) (rate(exchange_db_rows_written_total[{RATE}]))", "{{table}}")],
        width=6,
    )
    yield graph(
        "Event loop lag",
        "How late each exchange process runs what is due (p50, p99): CPU saturation "
        "shows here first. Auctions keep this lag back from their deadline, so it "
        "shortens the time buyers get.",
        "s",
        [
            query(
                "histogram_quantile(0.5, sum by (instance, le) "
                f"(rate(exchange_event_loop_lag_seconds_bucket[{RATE}])))",
                "{{instance}} p50",
            ),
            query(
                "histogram_quantile(0.99, sum by (instance, le) "
                f"(rate(exchange_event_loop_lag_seconds_bucket[{RATE}])))",
                "{{instance}} p99",
            ),
        ],
        width=6,
    )
    yield (
        single(
            "Ledger writer up",
            "UP while every exchange instance's batch writer writes its rows; DOWN once "
            "one's rows have failed to write (or one write has hung) for 2 s: that "
            "instance's /readyz answers 503 meanwhile, and its queue grows.",
            "none",
            "min(exchange_ledger_writer_up)",
            [Threshold(value=None, color="red"), Threshold(value=1, color="green")],
        )
        .mappings([up_down])
        .color_mode(BigValueColorMode.BACKGROUND)
        .no_value("no data")
        .span(6)
        .height(8)
    )
    yield graph(
        "Ledger rows rejected",
        "Ledger rows PostgreSQL refused (or that could not be encoded), by table, set "
        "aside in the dead-letter table ledger_rejected_rows while the rest of their "
        "batch was written. Should stay 0: each one is a bug to fix, then a row to "
        "replay (docs/reliability.md).",
        "short",
        [
            query(
                f"sum by (table) (increase(exchange_ledger_rows_rejected_total[{RATE}]))",
                "{{table}}",
            )
        ],
        width=6,
    )
    yield graph(
        "Ledger partitions ahead and past retention",
        "Per partitioned table: days past today with a day partition made (3 normally; "
        "below 1, new rows go to the default partition: the upkeep is failing), and day "
        "partitions kept past exchange.retention_days (0 normally; above 0, the archive "
        "has not run or a drop keeps failing). docs/scaling.md.",
        "short",
        [
            query("max by (table) (exchange_ledger_partitions_ahead)", "{{table}} ahead"),
            query(
                "min by (table) (exchange_ledger_partitions_past_retention)",
                "{{table}} past retention",
            ),
        ],
        width=6,
    )
    yield graph(
        "Auctions refused for overload / s",
        "Pings and direct posts answered 503 for overload, by reason: inflight "
        "(max_inflight_auctions reached in a process) or loop_lag (a process kept running "
        "later than overload_lag_ms: more work than CPU), both before the auction "
        "started; ledger_late (the auction ran but its ping row had not committed by "
        "tmax: the ledger database is slow). Sellers got Retry-After; any of this means "
        "the exchange or its database needs more capacity.",
        "reqps",
        [
            query(
                f"sum by (reason) (rate(exchange_overload_refusals_total[{RATE}]))",
                "{{reason}}",
            )
        ],
        width=6,
    )


ROWS = (
    ("Overview", overview),
    ("Buyers", buyers),
    ("Sellers", sellers),
    ("Lead pool", pool),
    ("Delayed delivery", holds),
    ("Errors and database", errors),
)


def build_dashboard() -> Dashboard:
    dashboard = (
        Dashboard("Lead exchange")
        .uid("lead-exchange")
        .description(
            "Ping-post lead auction exchange: traffic, money, deadline, buyers, "
            "sellers, errors and the ledger database. Generated by "
            "config/grafana/build_dashboards.py."
        )
        .tags(["lead-exchange", "generated"])
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("browser")
        .editable()
        .with_variable(
            label_variable("vertical", "Vertical", "exchange_auction_duration_seconds_count")
        )
        .with_variable(label_variable("seller", "Seller", "exchange_pings_total"))
        .with_variable(label_variable("buyer", "Buyer", REQUESTS))
    )
    for title, panels in ROWS:
        # An expanded row keeps its panels beside it at the top level (Grafana drops
        # panels nested in a row that is not collapsed).
        dashboard = dashboard.with_row(Row(title).collapsed(False))
        for panel in panels():
            dashboard = dashboard.with_panel(panel)
    return dashboard


def render() -> str:
    document: dict[str, Any] = json.loads(JSONEncoder().encode(build_dashboard().build()))
    for number, panel in enumerate(document["panels"], start=1):
        panel["id"] = number  # unique ids: Grafana links and "view panel" need them
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the lead exchange's Grafana dashboard.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python {__file__}", file=sys.stderr)
            return 1
        print(f"{OUTPUT}: up to date")
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
