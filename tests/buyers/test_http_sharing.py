"""Encodings shared by several buyers are built once per auction: buyers whose ping
templates encode alike share the offer's memo; a different template gets its own."""

from __future__ import annotations

from typing import Any

from buyers.adapter import BuyerEndpoint, PingOffer
from buyers.http_adapter import HttpAdapter
from exchange.core.http_templates import PingTemplate, PostTemplate

POST = PostTemplate.model_validate(
    {"url": "http://127.0.0.1:9/post", "accepted": "$.ok", "accepted_values": ["true"]}
)


def adapter(buyer_id: str, **ping: Any) -> HttpAdapter:
    template = {
        "url": f"http://127.0.0.1:9/{buyer_id}/ping",
        "format": "form",
        "fields": {"Zip": "zip", "State": "state"},
        "bid": "$.price",
        **ping,
    }
    return HttpAdapter(
        BuyerEndpoint(
            buyer_id,
            template["url"],
            POST.url,
            b"s3cret",
            ping_template=PingTemplate.model_validate(template),
            post_template=POST,
        )
    )


def test_buyers_with_equal_templates_share_one_encoding_per_auction() -> None:
    offer = PingOffer("p-1", "auto", 500, 0, {"zip": "90210", "state": "CA"})
    a, b = adapter("a"), adapter("b", auth={"type": "hmac"})
    first, second = a.ping_request(offer, 1), b.ping_request(offer, 1)
    assert first.body is second.body  # encoded once, the same bytes object
    assert len(offer.memo) == 1
    assert first.url != second.url and second.headers  # each its own URL and signature


def test_a_different_template_gets_its_own_encoding() -> None:
    offer = PingOffer("p-1", "auto", 500, 0, {"zip": "90210", "state": "CA"})
    plain = adapter("a").ping_request(offer, 1)
    mapped = adapter("b", values={"State": {"CA": "California"}}).ping_request(offer, 1)
    assert plain.body == b"Zip=90210&State=CA"
    assert mapped.body == b"Zip=90210&State=California"
    assert len(offer.memo) == 2


def test_a_new_auction_encodes_afresh() -> None:
    a = adapter("a")
    one = a.ping_request(PingOffer("p-1", "auto", 500, 0, {"zip": "90210"}), 1)
    two = a.ping_request(PingOffer("p-2", "auto", 500, 0, {"zip": "10001"}), 1)
    assert (one.body, two.body) == (b"Zip=90210", b"Zip=10001")
