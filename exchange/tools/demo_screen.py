"""What the demo shows: a full-screen view (rich's Live and Layout) in a terminal, one
line a second otherwise, and a summary at the end. Everything here is drawn from a
``Snapshot``; nothing is measured here.

The exchange's own figures (from its /metrics) and what the simulated sellers measured
(end to end, the demo's own client included) are kept in two panels side by side, under
their sources' names, with the CPU of each of the demo's processes and who, if anyone,
is the limit below them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Group, JustifyMethod
from rich.layout import Layout
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from exchange.tools.demo_figures import (
    BuyerRow,
    ExchangeFigures,
    Finding,
    SellerFigures,
    Spread3,
    other_cores,
)

FIXED_PRICE = "fixed price"  # the format shown for a buyer that is never pinged
CPU_PARTS = (
    ("exchange", "exchange"),
    ("database", "database"),
    ("buyers", "buyers"),
    ("sellers", "sellers"),
    ("screen", "this screen"),
)


@dataclass(frozen=True)
class AuctionRow:
    """One auction the sellers finished, and its story from the exchange's ledger
    (``GET /v1/auctions/{ping_id}``) once it could be read."""

    at: str
    seller: str
    ping_id: str | None
    status: str  # bid, no_bid, or the HTTP status of a refused ping
    price: str | None  # the payout offered
    post: str | None  # sold, unsold, not posted (None: no bid)
    paid: str | None
    reason: str | None
    seller_ms: float | None
    story: Mapping[str, Any] | None = None

    @classmethod
    def from_report(cls, item: Mapping[str, Any]) -> AuctionRow:
        return cls(
            at=str(item.get("at", "")),
            seller=str(item.get("seller", "")),
            ping_id=item.get("ping_id"),
            status=str(item.get("status", "")),
            price=item.get("price"),
            post=item.get("post"),
            paid=item.get("paid"),
            reason=item.get("reason"),
            seller_ms=item.get("ms"),
        )


@dataclass(frozen=True)
class Snapshot:
    """Everything one frame (or the summary) shows."""

    url: str
    rate: float
    buyer_count: int
    data_dir: str
    admin_token: str
    elapsed_s: float
    tmax_ms: float
    exchange_window: ExchangeFigures | None
    exchange_total: ExchangeFigures | None
    sellers_window: SellerFigures
    sellers_total: SellerFigures
    cores_window: Mapping[str, float]
    cores_total: Mapping[str, float]
    cpus: int
    findings_window: Sequence[Finding]
    findings_total: Sequence[Finding]
    buyers: Sequence[BuyerRow]
    recent: Sequence[AuctionRow] = field(default_factory=list)
    example_ping_id: str | None = None


# -- formatting -------------------------------------------------------------------------------


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def triple(spread: Spread3 | None, unit: str = " ms", gap: str = " / ") -> str:
    """p50, p95, p99; ``≤`` before each when they are histogram bucket bounds."""
    if spread is None or spread.p50 is None:
        return "-"
    mark = "≤" if spread.at_most else ""
    values = (spread.p50, spread.p95, spread.p99)
    return gap.join(f"{mark}{ms(v)}" if v != math.inf else ">max" for v in values) + unit


def compact(spread: Spread3 | None) -> str:
    """p50/p95/p99 for the screen's narrow cells."""
    return triple(spread, "", "/")


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def dollars(value: float) -> str:
    return f"${value:,.2f}"


def caps_left(row: BuyerRow) -> str:
    if not row.caps:
        return "-"
    parts = []
    for cap in row.caps:
        parts.append(
            f"{cap.window} {cap.leads}"
            if cap.leads is not None
            else f"{cap.window} {dollars(cap.dollars or 0.0)}"
        )
    text = ", ".join(parts)
    return text + (f" (capped {row.capped})" if row.capped else "")


def _pings(row: BuyerRow) -> str:
    return "-" if row.format == FIXED_PRICE else str(row.pings)  # bids without being called


def try_commands(snap: Snapshot) -> list[str]:
    auth = f"-H 'Authorization: Bearer {snap.admin_token}'"
    story = (
        f"curl -s {auth} {snap.url}/v1/auctions/{snap.example_ping_id}"
        if snap.example_ping_id
        else "(an auction's story: waiting for the first sale's ping_id)"
    )
    return [
        story,
        f"curl -s {auth} {snap.url}/v1/reports/buyers",
        f"curl -s {snap.url}/metrics | grep -E '^exchange_(auction_duration|deadline_misses)'",
    ]


def cores_text(cores: Mapping[str, float], cpus: int) -> str:
    if not cores:
        return "CPU: measuring…" if cpus else "CPU: not measured here (needs Linux's /proc)"
    parts = [f"{label} {cores[key]:.2f}" for key, label in CPU_PARTS if key in cores]
    machine = cores.get("machine")
    tail = (
        f"; machine {machine:.2f} of {cpus} cores busy (other processes {other_cores(cores):.2f})"
        if machine is not None
        else ""
    )
    return "CPU cores: " + ", ".join(parts) + tail


def _story_cells(row: AuctionRow) -> tuple[str, str, str]:
    """(buyers that bid of those called, the winner, the exchange's duration)."""
    story = row.story
    if not story:
        return "…", "…", "…"
    buyers = story.get("buyers") or []
    called = [
        b
        for b in buyers
        if b.get("outcome") in ("bid", "no_bid", "timeout", "error", "below_floor")
    ]
    bids = sum(1 for b in called if b.get("outcome") == "bid")
    winner = next((b["buyer"] for b in buyers if b.get("rank") == 1), "-")
    sale = story.get("sale")
    if sale:
        winner = sale.get("buyer", winner)
    return f"{bids} of {len(called)}", str(winner), ms(story.get("duration_ms"))


def _outcome(row: AuctionRow) -> Text:
    if row.status not in ("bid", "no_bid"):
        return Text(f"HTTP {row.status}", style="bold red")
    if row.status == "no_bid":
        return Text("no bid", style="dim")
    offered = f"bid ${float(row.price or 0):.2f}"
    if row.post == "sold":
        return Text(f"{offered}, sold", style="green")
    if row.post == "unsold":
        return Text(f"{offered}, unsold ({row.reason})", style="yellow")
    return Text(f"{offered}, not posted", style="dim")


# -- the live screen --------------------------------------------------------------------------


def _figure_table() -> Table:
    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False)
    table.add_column("", no_wrap=True, overflow="ellipsis")
    table.add_column("last 10 s", justify="right", no_wrap=True)
    table.add_column("total", justify="right", no_wrap=True)
    return table


def _exchange_table(snap: Snapshot) -> Table:
    table = _figure_table()
    w, t = snap.exchange_window, snap.exchange_total

    def both(get: Any) -> tuple[str, str]:
        return (get(w) if w else "-", get(t) if t else "-")

    table.add_row("auctions / s", *both(lambda f: rate(f.per_second)))
    table.add_row("duration 50/95/99", *both(lambda f: compact(f.duration_ms)))
    table.add_row("overhead 50/95/99", *both(lambda f: compact(f.overhead_ms)))
    table.add_row("past tmax + 5 ms", *both(lambda f: str(f.past_tmax)))
    table.add_row("503 answers", *both(lambda f: str(f.answered_503)))
    table.add_row("loop lag p99", *both(lambda f: f"≤{ms(f.loop_lag_p99_ms)}"))
    table.add_row(
        "pool in, claimed, waiting",
        *both(lambda f: f"{f.pool_entered}, {f.pool_claimed}, {f.pool_waiting}"),
    )
    return table


def _sellers_table(snap: Snapshot) -> Table:
    table = _figure_table()
    w, t = snap.sellers_window, snap.sellers_total

    def both(get: Any) -> tuple[str, str]:
        return get(w), get(t)

    table.add_row(
        "leads/s due, sent", *both(lambda f: f"{rate(f.rate(f.asked))}, {rate(f.rate(f.sent))}")
    )
    table.add_row("answer p50/95/99", *both(lambda f: compact(Spread3.of_tally(f.ping))))
    table.add_row(
        " in client p95, max", *both(lambda f: f"{ms(f.wait.percentile(95))}, {ms(f.wait.maximum)}")
    )
    table.add_row(" on wire p50/95/99", *both(lambda f: compact(Spread3.of_tally(f.wire))))
    table.add_row("past tmax + 5 ms", *both(lambda f: str(f.late)))
    table.add_row("not 200, no answer", *both(lambda f: f"{f.not_ok - f.failed}, {f.failed}"))
    table.add_row("sold, fill rate", *both(lambda f: f"{f.sold}, {percent(f.fill_rate)}"))
    table.add_row("seller payouts", *both(lambda f: dollars(f.payout_cents / 100)))
    return table


def buyer_table(snap: Snapshot, title: str | None = None) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD, expand=True, title=title, pad_edge=False, collapse_padding=True
    )
    widths = {"buyer": 19, "format": 11, "pings": 6, "bids": 6, "wins": 5, "sold": 5,
              "accepted": 8, "timeouts": 8, "revenue": 10, "caps left": 13}  # fmt: skip
    for name, width in widths.items():
        justify: JustifyMethod = "left" if name in ("buyer", "format", "caps left") else "right"
        table.add_column(name, justify=justify, no_wrap=True, min_width=width)
    for row in snap.buyers:
        table.add_row(
            row.buyer,
            row.format,
            _pings(row),
            str(row.bids),
            str(row.wins),
            str(row.accepted),
            percent(row.accept_rate),
            str(row.timeouts),
            dollars(row.revenue),
            caps_left(row),
        )
    return table


def _auction_table(snap: Snapshot) -> Table:
    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False)
    widths = {"ping_id": 13, "seller": 14, "answer, post": 22, "bids": 6, "winner": 12,
              "ms: exchange, seller": 10}  # fmt: skip
    for name, width in widths.items():
        justify: JustifyMethod = "right" if name in ("bids", "ms: exchange, seller") else "left"
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis", min_width=width)
    for row in reversed(snap.recent):
        bids, winner, duration = _story_cells(row)
        table.add_row(
            f"…{row.ping_id[-12:]}" if row.ping_id else "-",
            row.seller,
            _outcome(row),
            bids,
            winner,
            f"{duration}, {ms(row.seller_ms)}",
        )
    return table


def _findings(found: Sequence[Finding]) -> Text:
    text = Text()
    for finding in found:
        mark, style = ("! ", "bold yellow") if finding.limit else ("✓ ", "green")
        text.append(mark, style=style)
        text.append(finding.text + "\n")
    text.rstrip()
    return text


def screen(snap: Snapshot, width: int = 120) -> Layout:
    """The full-screen frame, for a terminal ``width`` columns wide."""
    header = Text(overflow="fold")
    header.append(f"exchange on {snap.url}", style="bold")
    header.append(
        f" · {snap.buyer_count} buyers + a fixed-price tier · {snap.rate:g} leads/s · "
        f"tmax {snap.tmax_ms:.0f} ms · {snap.elapsed_s:.0f} s · Ctrl-C: summary\n"
    )
    commands = try_commands(snap)
    for command in commands:
        header.append("try: ", style="cyan")
        header.append(command + "\n")
    header.rstrip()
    inside = max(20, width - 4)
    info = len(snap.url) + 100  # the first line, about
    header_lines = -(-info // inside) + sum(-(-(len(c) + 5) // inside) for c in commands)
    found = _findings(snap.findings_window)
    found_lines = sum(-(-len(f.text) // max(20, width - 6)) for f in snap.findings_window)

    layout = Layout()
    layout.split_column(
        Layout(
            Panel(header, title="lead-exchange demo", border_style="cyan"), size=2 + header_lines
        ),
        Layout(name="figures", size=13),
        Layout(
            Panel(
                Group(Text(cores_text(snap.cores_window, snap.cpus)), found),
                title="who is the limit (last 10 s)",
            ),
            size=4 + found_lines,
        ),
        Layout(
            Panel(buyer_table(snap), title="buyers, as the exchange counted them"),
            size=len(snap.buyers) + 5,
        ),
        Layout(
            Panel(
                _auction_table(snap),
                title="last auctions (bids, winner, exchange ms: their stories from the ledger)",
            )
        ),
    )
    layout["figures"].split_row(
        Layout(
            Panel(
                _exchange_table(snap),
                title="the exchange's own figures (its /metrics)",
                border_style="green",
            )
        ),
        Layout(
            Panel(
                _sellers_table(snap),
                title="what the sellers measured (end to end, this client included)",
                border_style="blue",
            )
        ),
    )
    return layout


# -- plain lines and the summary ----------------------------------------------------------------


def plain_line(snap: Snapshot) -> str:
    """One line a second when the output is not a terminal (or with --plain)."""
    e, s = snap.exchange_window, snap.sellers_window
    exchange = (
        "exchange: -"
        if e is None
        else (
            f"exchange: {rate(e.per_second)} auctions/s, duration p50/p95/p99 "
            f"{triple(e.duration_ms)}, overhead p95 {ms(e.overhead_ms.p95)} ms, "
            f"past tmax {e.past_tmax}, 503s {e.answered_503}"
        )
    )
    sellers = (
        f"sellers: {rate(s.rate(s.sent))} leads/s, ping p95 {ms(s.ping.percentile(95))} ms "
        f"(in the client p95 {ms(s.wait.percentile(95))} ms), sold "
        f"{snap.sellers_total.sold}, payouts {dollars(snap.sellers_total.payout_cents / 100)}"
    )
    cores = cores_text(snap.cores_window, snap.cpus)
    return f"t={snap.elapsed_s:4.0f}s | {exchange} | {sellers} | {cores}"


def summary_lines(snap: Snapshot) -> list[str]:
    """The summary printed at the end, whole-run figures only."""
    s, e = snap.sellers_total, snap.exchange_total
    lines = [
        f"summary: ran {snap.elapsed_s:.0f} s at {snap.rate:g} leads/s asked; the sellers sent "
        f"{s.sent} pings ({rate(s.rate(s.sent))}/s): {s.bids} bids, {s.posts} posts, "
        f"{s.sold} sold, {s.unsold} unsold, fill rate {percent(s.fill_rate)}, seller payouts "
        f"{dollars(s.payout_cents / 100)}",
    ]
    if e is not None:
        refusals = ", ".join(f"{k} {v}" for k, v in e.refusals.items())
        lines.append(
            f"the exchange (its /metrics): {e.auctions} auctions; duration p50/p95/p99 "
            f"{triple(e.duration_ms)} (tmax {e.tmax_ms:.0f} ms); overhead p50/p95/p99 "
            f"{triple(e.overhead_ms)}; answers past tmax + 5 ms: {e.past_tmax}; "
            f"503 answers: {e.answered_503}"
            + (f" ({refusals})" if refusals else "")
            + f"; event-loop lag p99 ≤{ms(e.loop_lag_p99_ms)} ms (≤: histogram bucket bounds)"
        )
        lines.append(
            f"the lead pool: {e.pool_entered} unsold leads entered it, {e.pool_claimed} were "
            f"claimed (the pull buyer paid {dollars(s.pool_paid_cents / 100)} for "
            f"{s.pool_claims}), {e.pool_waiting} wait there now"
        )
    lines.append(
        f"the sellers (end to end, in the demo's client): ping answer p50/p95/p99 "
        f"{triple(Spread3.of_tally(s.ping))}; of which in the client p95 "
        f"{ms(s.wait.percentile(95))} ms, max {ms(s.wait.maximum)} ms; on the wire "
        f"p50/p95/p99 {triple(Spread3.of_tally(s.wire))}; answers past tmax + 5 ms: {s.late}; "
        f"not 200: {s.not_ok - s.failed}; no answer: {s.failed}"
    )
    lines.append(cores_text(snap.cores_total, snap.cpus).replace("CPU cores", "CPU (mean cores)"))
    for finding in snap.findings_total:
        lines.append(("limit: " if finding.limit else "limit: none; ") + finding.text)
    return lines


def buyer_lines(snap: Snapshot) -> list[str]:
    head = (
        f"{'buyer':<22} {'format':<12} {'pings':>6} {'bids':>6} {'wins':>5} {'sold':>5} "
        f"{'accept':>6} {'timeouts':>8} {'revenue':>11}  caps left"
    )
    lines = [head]
    for row in snap.buyers:
        lines.append(
            f"{row.buyer:<22} {row.format:<12} {_pings(row):>6} {row.bids:>6} {row.wins:>5} "
            f"{row.accepted:>5} {percent(row.accept_rate):>6} {row.timeouts:>8} "
            f"{dollars(row.revenue):>11}  {caps_left(row)}"
        )
    return lines
