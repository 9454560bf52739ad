"""CPU per buyer call of each buyer adapter: the ``json`` adapter (SPEC section 5) against
``http`` templates in json, form and xml (SPEC section 8).

    python -m benchmarks.adapters [--calls N] [--rounds R] [--output DIR]

A "call" is what the auction does per buyer: build the ping request and read a bid
answer (``ping``), or build the post request and read a verdict (``post``). ``ping``
encodes the body afresh for every call (a buyer alone in its auction); ``ping shared``
lets ten buyers of one auction share the offer's memo, so the body is encoded once per
auction and each buyer adds its own headers and reads its own answer. Adapters are
compiled once, before timing, as at config load.

Rounds alternate between the adapters (A B C D A B C D ...), each timed with the process
CPU clock; the table gives each adapter's median, min and max CPU per call in
microseconds, and the median's ratio to the ``json`` adapter of the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from buyers.adapter import Adapter, BuyerEndpoint, HttpResponse, PingOffer, PostOffer
from buyers.http_adapter import HttpAdapter
from buyers.json_adapter import JsonAdapter
from exchange.core.http_templates import PingTemplate, PostTemplate

RESULTS = Path(__file__).with_name("results")
PING_LEAD = {
    "zip": "94107",
    "state": "CA",
    "age": 41,
    "credit_rating": "good",
    "dob": "1983-04-05",
    "homeowner": True,
    "vehicles": 2,
}
FULL_LEAD = {
    **PING_LEAD,
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada@example.com",
    "phone": "+14155552671",
}
SHARED_BUYERS = 10

_FIELDS = {"ZipCode": "zip", "State": "state", "Age": "age", "Credit": "credit_rating"}
_POST_FIELDS = {
    **_FIELDS,
    "FirstName": "first_name",
    "LastName": "last_name",
    "Email": "email",
    "Phone": "phone",
    "LeadId": "bid_id",
}


def _templates(fmt: str) -> tuple[dict[str, Any], dict[str, Any]]:
    auth = {"type": "header", "name": "X-Api-Key", "value": "k-0123456789"}
    if fmt == "json":
        ping = {
            "format": "json",
            "fields": {f"Contact.{k}": v for k, v in _FIELDS.items()} | {"DOB": "dob"},
            "transforms": {"DOB": "date:%m/%d/%Y"},
            "constants": {"SourceId": "LX-17"},
            "bid": "$.result.price",
            "bid_id": "$.result.id",
        }
        post = {
            "format": "json",
            "fields": {f"Contact.{k}": v for k, v in _POST_FIELDS.items()},
            "transforms": {"Contact.Phone": "digits10"},
            "accepted": "$.status",
            "accepted_values": ["accepted"],
            "buyer_lead_id": "$.lead_id",
        }
    elif fmt == "form":
        ping = {
            "format": "form",
            "fields": _FIELDS | {"DOB": "dob"},
            "transforms": {"DOB": "date:%m/%d/%Y"},
            "values": {"State": {"CA": "California"}},
            "constants": {"Key": "k-0123456789", "API_Action": "pingPostLead"},
            "bid": "/response/price",
            "bid_id": "/response/lead_id",
        }
        post = {
            "format": "form",
            "fields": _POST_FIELDS,
            "transforms": {"Phone": "digits10"},
            "accepted": "/response/status",
            "accepted_values": ["Matched"],
            "buyer_lead_id": "/response/lead_id",
        }
    else:
        ping = {
            "format": "xml",
            "root": "Lead",
            "fields": {f"Contact.{k}": v for k, v in _FIELDS.items()} | {"DOB": "dob"},
            "transforms": {"DOB": "date:%m/%d/%Y"},
            "bid": "/Response/Price",
            "bid_id": "/Response/Id",
        }
        post = {
            "format": "xml",
            "root": "Lead",
            "fields": {f"Contact.{k}": v for k, v in _POST_FIELDS.items()},
            "transforms": {"Contact.Phone": "digits10"},
            "accepted": "/Response/Status",
            "accepted_values": ["Accepted"],
            "buyer_lead_id": "/Response/LeadId",
        }
    ping |= {"url": "http://127.0.0.1:9001/ping", "auth": auth}
    post |= {"url": "http://127.0.0.1:9001/post", "auth": auth}
    return ping, post


_ANSWERS: dict[str, tuple[bytes, bytes]] = {
    "json adapter": (
        b'{"bid": 12.50, "bid_id": "b-0123456789abcdef"}',
        b'{"accepted": true, "buyer_lead_id": "L-42"}',
    ),
    "http json": (
        b'{"result": {"price": 12.50, "id": "b-0123456789abcdef"}}',
        b'{"status": "Accepted", "lead_id": "L-42"}',
    ),
    "http form": (
        b"<response><status>Matched</status><lead_id>b-0123456789abcdef</lead_id>"
        b"<price>12.50</price></response>",
        b"<response><status>Matched</status><lead_id>L-42</lead_id></response>",
    ),
    "http xml": (
        b'<?xml version="1.0"?><Response><Price>12.50</Price><Id>b-0123456789abcdef</Id>'
        b"</Response>",
        b"<Response><Status>Accepted</Status><LeadId>L-42</LeadId></Response>",
    ),
}


def adapters() -> dict[str, Adapter]:
    made: dict[str, Adapter] = {
        "json adapter": JsonAdapter(
            BuyerEndpoint(
                "bench", "http://127.0.0.1:9001/ping", "http://127.0.0.1:9001/post", b"s3cret"
            )
        )
    }
    for fmt in ("json", "form", "xml"):
        ping, post = _templates(fmt)
        made[f"http {fmt}"] = HttpAdapter(
            BuyerEndpoint(
                "bench",
                ping["url"],
                post["url"],
                b"",
                ping_template=PingTemplate.model_validate(ping),
                post_template=PostTemplate.model_validate(post),
            )
        )
    return made


def _ping_call(adapter: Adapter, answer: HttpResponse, calls: int) -> Callable[[], None]:
    def run() -> None:
        for i in range(calls):
            offer = PingOffer(f"p-{i}", "auto_insurance", 800, 250, PING_LEAD)
            adapter.ping_request(offer, 1_700_000_000)
            adapter.read_bid(answer)

    return run


def _shared_call(adapter: Adapter, answer: HttpResponse, calls: int) -> Callable[[], None]:
    def run() -> None:
        for i in range(calls // SHARED_BUYERS):
            offer = PingOffer(f"p-{i}", "auto_insurance", 800, 250, PING_LEAD)
            for _ in range(SHARED_BUYERS):
                adapter.ping_request(offer, 1_700_000_000)
                adapter.read_bid(answer)

    return run


def _post_call(adapter: Adapter, answer: HttpResponse, calls: int) -> Callable[[], None]:
    def run() -> None:
        for i in range(calls):
            offer = PostOffer(f"p-{i}", "b-0123456789abcdef", 1250, "auto_insurance", FULL_LEAD)
            adapter.post_request(offer, 1_700_000_000)
            adapter.read_post(answer)

    return run


_KINDS = {"ping": _ping_call, "ping shared": _shared_call, "post": _post_call}


def measure(calls: int, rounds: int) -> dict[str, Any]:
    made = adapters()
    results: dict[str, Any] = {"calls": calls, "rounds": rounds, "kinds": {}}
    for kind, make in _KINDS.items():
        runs: dict[str, Callable[[], None]] = {}
        for name, adapter in made.items():
            ping_body, post_body = _ANSWERS[name]
            body = post_body if kind == "post" else ping_body
            runs[name] = make(adapter, HttpResponse(200, {}, body), calls)
            runs[name]()  # warm up: first-call costs out of the timing
        samples: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                start = time.process_time_ns()
                run()
                samples[name].append((time.process_time_ns() - start) / calls / 1000)
        base = statistics.median(samples["json adapter"])
        results["kinds"][kind] = {
            name: {
                "median_us": round(statistics.median(values), 2),
                "min_us": round(min(values), 2),
                "max_us": round(max(values), 2),
                "ratio": round(statistics.median(values) / base, 2),
            }
            for name, values in samples.items()
        }
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# CPU per buyer call, by adapter",
        "",
        f"{results['calls']} calls per round, {results['rounds']} alternating rounds; "
        "median (min-max) microseconds of process CPU per call; ratio of medians to the "
        "json adapter.",
        "",
        "| call | adapter | CPU per call, µs | ratio |",
        "|---|---|---|---|",
    ]
    for kind, rows in results["kinds"].items():
        for name, row in rows.items():
            lines.append(
                f"| {kind} | {name} | {row['median_us']:.1f} "
                f"({row['min_us']:.1f}-{row['max_us']:.1f}) | {row['ratio']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.adapters")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = measure(max(args.calls, SHARED_BUYERS), max(args.rounds, 1))
    text = markdown(results)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "adapters.json").write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n"
    )
    (args.output / "adapters.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
