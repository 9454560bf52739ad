"""The exchange's Grafana dashboard, as code.

Built with Grafana's own builder library (grafana-foundation-sdk, the build for Grafana
11.6) and written to ``config/grafana/dashboards/lead-exchange.json``, which Grafana
loads through ``config/grafana/provisioning/``. The JSON is checked in so Grafana and
the tests need nothing but the file; edit this script, not the JSON, then run::

    pip install 'grafana-foundation-sdk==1769699379!11.6.0'
    python config/grafana/build_dashboards.py          # rewrite the JSON
    python config/grafana/build_dashboards.py --check  # exit 1 if the JSON is stale

Every query uses only metric names from exchange/metrics.py (tests/test_dashboards.py
checks them against a live /metrics, and tests/test_prometheus_live.py runs each one
against a real Prometheus). docs/observability.md says what each panel answers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.builders.common import ReduceDataOptions, VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    QueryVariable,
    Row,
    TextBoxVariable,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
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

# The datasource provisioned in provisioning/datasources/prometheus.yml.
DATASOURCE_UID = "prometheus"
PROMETHEUS = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)

RATE = "$__rate_interval"
RANGE = "$__range"
V = 'vertical=~"$vertical"'
B = 'buyer=~"$buyer"'
S = 'seller=~"$seller"'
# Ping outcomes of a buyer the exchange actually asked (fixed-price bids count as bids).
ASKED = 'outcome=~"bid|no_bid|timeout|error|below_floor"'
BIDS = 'outcome=~"bid|below_floor"'
EXCLUSIONS = 'outcome=~"filtered|capped|off_schedule|duplicate|seller_blocked"'

REQUESTS = "exchange_buyer_requests_total"


# ---------------------------------------------------------------------------------------
# Small builders


def query(expr: str, legend: str = "__auto") -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).datasource(PROMETHEUS)


def table_query(expr: str, ref_id: str) -> Dataquery:
    return (
        Dataquery().expr(expr).ref_id(ref_id).instant().format(PromQueryFormat.TABLE)
        .datasource(PROMETHEUS)
    )  # fmt: skip


def quantiles(metric: str, selector: str, by: str = "", label: str = "") -> list[Dataquery]:
    group = f"{by}, le" if by else "le"
    prefix = f"{label} " if label else ""
    return [
        query(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"{prefix}p{round(q * 100)}",
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
    for target in targets:
        panel = panel.with_target(target)
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
        .with_target(query(expr, "__auto"))
    )


def summary_table(
    title: str, description: str, key: str, columns: list[tuple[str, str, str]]
) -> table.Panel:
    """One row per ``key`` (buyer or seller); each column is (header, unit, instant
    query over the dashboard's time range), merged on the key."""
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
        panel = panel.with_target(table_query(expr, ref))
        renames[f"Value #{ref}"] = header
        panel = panel.override_by_name(header, [DynamicConfigValue(id_val="unit", value=unit)])
    organize = {
        "excludeByName": {"Time": True},
        "indexByName": {key: 0, **{h: i + 1 for i, (h, _, _) in enumerate(columns)}},
        "renameByName": renames,
    }
    return panel.with_transformation(DataTransformerConfig(id_val="organize", options=organize))


def variable(name: str, label: str, metric: str) -> QueryVariable:
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


def ratio(numerator: str, denominator: str) -> str:
    return f"{numerator}\n/\n{denominator}"


# ---------------------------------------------------------------------------------------
# Rows


def overview() -> Row:
    pings = f"sum(rate(exchange_pings_total{{{V}}}[{RATE}]))"
    sales = f"sum(rate(exchange_sales_total{{{V}}}[{RATE}]))"
    revenue = f"sum(rate(exchange_revenue_dollars_total{{{B}}}[{RATE}]))"
    payout = f"sum(rate(exchange_payout_dollars_total{{{S}}}[{RATE}]))"
    bad = [Threshold(value=None, color="green"), Threshold(value=1, color="red")]
    return (
        "Overview",
        [
        (single("Pings / s", "Pings answered per second.", "reqps", pings))
        .with_panel(
            single("Fill rate", "Leads sold per ping answered (sales / pings).",
                   "percentunit", ratio(sales, pings))
        )  # fmt: skip
        .with_panel(
            single("Revenue / min", "What buyers pay for the leads sold, per minute.",
                   "currencyUSD", f"60 * {revenue}")
        )  # fmt: skip
        .with_panel(
            single("Margin / min", "Revenue minus seller payouts, per minute: what the "
                   "exchange keeps.", "currencyUSD",
                   "60 * (sum(rate(exchange_revenue_dollars_total[$__rate_interval]))"
                   " - sum(rate(exchange_payout_dollars_total[$__rate_interval])))")
        )  # fmt: skip
        .with_panel(
            single("Deadline misses", "Ping answers ready later than tmax + 5 ms in the "
                   "selected time range. Should be 0.", "short",
                   f"sum(increase(exchange_deadline_misses_total{{{V}}}[{RANGE}]))", bad)
        )  # fmt: skip
        .with_panel(
            single("In-flight auctions", "Auctions waiting on buyers right now.", "short",
                   "sum(exchange_inflight_auctions)")
        )  # fmt: skip
        .with_panel(
            graph("Pings / s by answer", "Pings answered per second, by what the seller "
                  "was told: bid (a price) or no_bid.", "reqps",
                  [query(f"sum by (status) (rate(exchange_pings_total{{{V}, {S}}}[{RATE}]))",
                         "{{status}}")])
        )  # fmt: skip
        .with_panel(
            graph("Fill rate and no-bid share", "Fill rate: sales / pings. No-bid share: "
                  "pings that no buyer bid on (above the floor).", "percentunit",
                  [query(ratio(sales, pings), "fill rate"),
                   query(ratio(f'sum(rate(exchange_pings_total{{{V}, status="no_bid"}}[{RATE}]))',
                               pings), "no-bid share")])
        )  # fmt: skip
        .with_panel(
            graph("Auction duration against tmax", "Ping received to answer ready, "
                  "p50/p95/p99, against the configured tmax (the tmax_ms box at the top; "
                  "set it to the config's exchange.tmax_ms). p99 near tmax means buyers "
                  "are timing out; above it, the exchange is late.", "s",
                  [*quantiles("exchange_auction_duration_seconds", V),
                   query("vector($tmax_ms / 1000)", "tmax")])
        )  # fmt: skip
        .with_panel(
            graph("Deadline misses / s", "Ping answers later than tmax + 5 ms, by vertical: "
                  "an overloaded or stalled exchange.", "short",
                  [query(f"sum by (vertical) (rate(exchange_deadline_misses_total{{{V}}}[{RATE}]))",
                         "{{vertical}}")])
        )  # fmt: skip
        .with_panel(
            graph("Revenue and payout / min", "Buyer revenue and seller payouts per minute.",
                  "currencyUSD", [query(f"60 * {revenue}", "revenue"),
                                  query(f"60 * {payout}", "payout")])
        )  # fmt: skip
        .with_panel(
            graph("Sold and unsold posts / s", "Posts that ended sold or unsold, by vertical.",
                  "reqps",
                  [query(f"sum by (vertical) (rate(exchange_sales_total{{{V}}}[{RATE}]))",
                         "sold {{vertical}}"),
                   query(f"sum by (vertical) (rate(exchange_unsold_posts_total{{{V}}}[{RATE}]))",
                         "unsold {{vertical}}")])
        )  # fmt: skip
        .with_panel(
            graph("In-flight auctions", "Auctions waiting on buyers, summed over instances.",
                  "short", [query("sum(exchange_inflight_auctions)", "in flight")], width=8)
        )  # fmt: skip
        .with_panel(
            graph("Exchange overhead", "Auction time not spent waiting on buyers "
                  "(screening, ranking, recording).", "s",
                  quantiles("exchange_auction_overhead_seconds", V), width=8)
        )  # fmt: skip
        .with_panel(
            graph("Post attempts per sale", "Buyers posted to before one accepted: 1 is "
                  "the top bid, more is fallback down the ping tree.", "short",
                  [*quantiles("exchange_post_attempts_per_sale", ""),
                   query(ratio("sum(rate(exchange_post_attempts_per_sale_sum[$__rate_interval]))",
                               "sum(rate(exchange_post_attempts_per_sale_count[$__rate_interval]))"),
                         "mean")], width=8)
        )  # fmt: skip
    )


def _per_buyer(outcomes: str, phase: str = "ping", window: str = RATE) -> str:
    return (
        f'sum by (buyer) (rate({REQUESTS}{{phase="{phase}", {outcomes}, {B}}}[{window}]))'
    )


def buyers() -> Row:
    asked = _per_buyer(ASKED)
    accepted = _per_buyer('outcome="accepted"', "post")
    posted = f'sum by (buyer) (rate({REQUESTS}{{phase="post", {B}}}[{RATE}]))'

    def over_range(expr: str) -> str:
        return expr.replace("rate(", "increase(").replace(RATE, RANGE)

    table_columns = [
        ("Pings asked", "short", over_range(asked)),
        ("Bid rate", "percentunit", ratio(_per_buyer(BIDS, window=RANGE),
                                          _per_buyer(ASKED, window=RANGE))),
        ("Timeout rate", "percentunit", ratio(_per_buyer('outcome="timeout"', window=RANGE),
                                              _per_buyer(ASKED, window=RANGE))),
        ("Error rate", "percentunit", ratio(_per_buyer('outcome="error"', window=RANGE),
                                            _per_buyer(ASKED, window=RANGE))),
        ("Win rate (sold / bids)", "percentunit",
         ratio(_per_buyer('outcome="accepted"', "post", RANGE),
               _per_buyer('outcome="bid"', window=RANGE))),
        ("p95 ping latency", "s",
         "histogram_quantile(0.95, sum by (buyer, le) (rate("
         f'exchange_buyer_latency_seconds_bucket{{phase="ping", {B}}}[{RANGE}])))'),
        ("Post acceptance", "percentunit",
         ratio(_per_buyer('outcome="accepted"', "post", RANGE),
               f'sum by (buyer) (rate({REQUESTS}{{phase="post", {B}}}[{RANGE}]))')),
        ("Excluded (filters, caps, schedule)", "short", over_range(_per_buyer(EXCLUSIONS))),
        ("Spend", "currencyUSD",
         f"sum by (buyer) (increase(exchange_revenue_dollars_total{{{B}}}[{RANGE}]))"),
    ]  # fmt: skip
    return (
        "Buyers",
        [
        (
            summary_table("Buyers (selected time range)", "One row per buyer over the "
                          "dashboard's time range. Rates are shares of the pings the "
                          "buyer was asked; win rate is sales per bid; post acceptance is "
                          "sales per post sent (low: bids then rejects).", "buyer",
                          table_columns)
        )  # fmt: skip
        .with_panel(
            graph("Bid rate by buyer", "Share of pings asked that the buyer bid on.",
                  "percentunit", [query(ratio(_per_buyer(BIDS), asked), "{{buyer}}")])
        )  # fmt: skip
        .with_panel(
            graph("Ping timeout rate by buyer", "Share of pings asked that the buyer did "
                  "not answer within its timeout_ms or the auction's tmax.", "percentunit",
                  [query(ratio(_per_buyer('outcome="timeout"'), asked), "{{buyer}}")])
        )  # fmt: skip
        .with_panel(
            graph("p95 ping latency by buyer", "95th percentile of the time a buyer takes "
                  "to answer a ping (timeouts count at the deadline).", "s",
                  [query("histogram_quantile(0.95, sum by (buyer, le) (rate("
                         f'exchange_buyer_latency_seconds_bucket{{phase="ping", {B}}}'
                         f"[{RATE}])))", "{{buyer}}")])
        )  # fmt: skip
        .with_panel(
            graph("Post acceptance rate by buyer", "Share of posts the buyer accepted. Low "
                  "means it bids, then rejects the lead.", "percentunit",
                  [query(ratio(accepted, posted), "{{buyer}}")])
        )  # fmt: skip
        .with_panel(
            graph("Spend by buyer / min", "What each buyer pays per minute.", "currencyUSD",
                  [query(f"60 * sum by (buyer) (rate(exchange_revenue_dollars_total{{{B}}}"
                         f"[{RATE}]))", "{{buyer}}")])
        )  # fmt: skip
        .with_panel(
            graph("Exclusions by reason / s", "Buyers left out of an auction before being "
                  "asked (filters, caps, schedule, duplicates, seller lists) and bids under "
                  "the floor.", "reqps",
                  [query(f'sum by (outcome) (rate({REQUESTS}{{phase="ping", '
                         f'outcome=~"filtered|capped|off_schedule|duplicate|seller_blocked|'
                         f'below_floor", {B}}}[{RATE}]))', "{{outcome}}")])
        )  # fmt: skip
        .with_panel(
            graph("Post outcomes by buyer / s", "Posts to each buyer by outcome (accepted, "
                  "rejected, timeout, error).", "reqps",
                  [query(f'sum by (buyer, outcome) (rate({REQUESTS}{{phase="post", {B}}}'
                         f"[{RATE}]))", "{{buyer}} {{outcome}}")])
        )  # fmt: skip
        .with_panel(
            graph("p95 post latency by buyer", "95th percentile of the time a buyer takes "
                  "to answer a post.", "s",
                  [query("histogram_quantile(0.95, sum by (buyer, le) (rate("
                         f'exchange_buyer_latency_seconds_bucket{{phase="post", {B}}}'
                         f"[{RATE}])))", "{{buyer}}")])
        )  # fmt: skip
    )


def sellers() -> Row:
    def per_seller(metric: str, extra: str = "", window: str = RATE, fn: str = "rate") -> str:
        selector = f"{S}, {extra}" if extra else S
        return f"sum by (seller) ({fn}({metric}{{{selector}}}[{window}]))"

    pings = "exchange_pings_total"
    payout = "exchange_payout_dollars_total"
    columns = [
        ("Pings", "short", per_seller(pings, V, RANGE, "increase")),
        ("Bid share", "percentunit",
         ratio(per_seller(pings, f'{V}, status="bid"', RANGE), per_seller(pings, V, RANGE))),
        ("Payout", "currencyUSD", per_seller(payout, window=RANGE, fn="increase")),
        ("Payout per ping", "currencyUSD",
         ratio(per_seller(payout, window=RANGE), per_seller(pings, V, RANGE))),
    ]  # fmt: skip
    return (
        "Sellers",
        [
        (
            summary_table("Sellers (selected time range)", "One row per seller over the "
                          "dashboard's time range: pings sent, share that got a bid, payout "
                          "owed and payout per ping.", "seller", columns)
        )  # fmt: skip
        .with_panel(
            graph("Pings / s by seller", "Pings answered per second, by seller.", "reqps",
                  [query(per_seller(pings, V), "{{seller}}")], width=8)
        )  # fmt: skip
        .with_panel(
            graph("Bid share by seller", "Share of a seller's pings answered with a bid.",
                  "percentunit",
                  [query(ratio(per_seller(pings, f'{V}, status="bid"'), per_seller(pings, V)),
                         "{{seller}}")], width=8)
        )  # fmt: skip
        .with_panel(
            graph("Payout by seller / min", "What the exchange owes each seller per minute.",
                  "currencyUSD", [query(f"60 * {per_seller(payout)}", "{{seller}}")], width=8)
        )  # fmt: skip
    )


def errors() -> Row:
    up_down = [
        ValueMap({"0": ValueMappingResult(text="DOWN", color="red", index=0),
                  "1": ValueMappingResult(text="UP", color="green", index=1)})
    ]  # fmt: skip
    database_up = (
        single("Database up", "1 (UP) while every exchange instance can reach the ledger "
               "database; 0 (DOWN) as soon as one cannot.", "none", "min(exchange_db_up)",
               [Threshold(value=None, color="red"), Threshold(value=1, color="green")])
        .mappings(up_down)  # type: ignore[arg-type]
        .color_mode(BigValueColorMode.BACKGROUND)
        .no_value("no data")
        .span(6)
        .height(8)
    )  # fmt: skip
    return (
        "Errors and database",
        [
        (
            graph("Buyer timeouts / s", "Pings and posts that a buyer did not answer in "
                  "time, by buyer and phase.", "reqps",
                  [query(f'sum by (buyer, phase) (rate({REQUESTS}{{outcome="timeout", {B}}}'
                         f"[{RATE}]))", "{{buyer}} {{phase}}")])
        )  # fmt: skip
        .with_panel(
            graph("Buyer errors / s", "Buyer answers that were errors (non-2xx, bad JSON, "
                  "connection failures), by buyer and phase.", "reqps",
                  [query(f'sum by (buyer, phase) (rate({REQUESTS}{{outcome="error", {B}}}'
                         f"[{RATE}]))", "{{buyer}} {{phase}}")])
        )  # fmt: skip
        .with_panel(
            graph("API answers by status code / s", "Seller and operator API answers by "
                  "HTTP status code.", "reqps",
                  [query(f"sum by (code) (rate(exchange_http_requests_total[{RATE}]))",
                         "{{code}}")])
        )  # fmt: skip
        .with_panel(
            graph("API errors by route / s", "4xx and 5xx answers by route and code. A 5xx "
                  "is a bug: the exchange never answers 500 to client input.", "reqps",
                  [query('sum by (route, code) (rate(exchange_http_requests_total{code=~"4..|5.."}'
                         f"[{RATE}]))", "{{route}} {{code}}")])
        )  # fmt: skip
        .with_panel(database_up)
        .with_panel(
            graph("Ledger queue depth", "Ledger rows waiting in the batch writer's queue. "
                  "It is bounded: when full, auctions wait for the database.", "short",
                  [query("sum(exchange_db_queue_rows)", "queued rows")], width=6)
        )  # fmt: skip
        .with_panel(
            graph("Ledger write latency", "Time to write one batch (or one sale) to the "
                  "database, p50 and p99 by table.", "s",
                  [query("histogram_quantile(0.5, sum by (table, le) (rate("
                         f"exchange_db_write_seconds_bucket[{RATE}])))", "{{table}} p50"),
                   query("histogram_quantile(0.99, sum by (table, le) (rate("
                         f"exchange_db_write_seconds_bucket[{RATE}])))", "{{table}} p99")],
                  width=6)
        )  # fmt: skip
        .with_panel(
            graph("Ledger rows written / s", "Rows written to the ledger by table.", "short",
                  [query(f"sum by (table) (rate(exchange_db_rows_written_total[{RATE}]))",
                         "{{table}}")], width=6)
        )  # fmt: skip
    )


def build_dashboard() -> Dashboard:
    tmax = (
        TextBoxVariable("tmax_ms")
        .label("tmax_ms")
        .description("The auction deadline from the config (exchange.tmax_ms), drawn on the "
                     "auction duration panel.")
        .default_value("1000")
        .current(VariableOption(selected=True, text="1000", value="1000"))
    )  # fmt: skip
    return (
        Dashboard("Lead exchange")
        .uid("lead-exchange")
        .description("Ping-post lead auction exchange: traffic, money, deadline, buyers, "
                     "sellers, errors and the ledger database. Built by "
                     "config/grafana/build_dashboards.py.")
        .tags(["lead-exchange", "generated"])
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("browser")
        .editable()
        .with_variable(variable("vertical", "Vertical", "exchange_auction_duration_seconds_count"))
        .with_variable(variable("seller", "Seller", "exchange_pings_total"))
        .with_variable(variable("buyer", "Buyer", REQUESTS))
        .with_variable(tmax)
        .with_row(overview())
        .with_row(buyers())
        .with_row(sellers())
        .with_row(errors())
    )  # fmt: skip


def render() -> str:
    model = build_dashboard().build()
    return json.dumps(
        json.loads(JSONEncoder().encode(model)), indent=2, sort_keys=True, ensure_ascii=False
    ) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        print(f"{OUTPUT}: up to date")
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
