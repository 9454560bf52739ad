"""Every adapter's fixtures, walked by one test: ``buyers/fixtures/<adapter>/exemplary/``
(the wire format's main cases) and ``supplemental/`` (edges and hostile answers), kept
next to the adapters as Prebid Server keeps its adapters' test data.

A fixture holds the buyer endpoint, one offer (``ping`` or ``post``) and a timestamp; the
exact HTTP request the adapter must build; a canned response; and the reply the adapter
must read from it. The request body is given as ``body`` (JSON, compared with types:
``2.0`` is not ``2``) or ``body_text`` (exact text). The signature header pins the bytes.
An ``http`` adapter's endpoint carries its ``ping_template`` and ``post_template`` as
written in a buyer's config (SPEC section 8).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from buyers.adapter import (
    BidReply,
    BuyerEndpoint,
    HttpResponse,
    PingOffer,
    PostOffer,
    PostReply,
)
from buyers.registry import ADAPTERS, build_adapter
from exchange.core.http_templates import PingTemplate, PostTemplate
from exchange.core.outcomes import BidOutcome, PostOutcome

FIXTURES = Path(__file__).resolve().parents[2] / "buyers" / "fixtures"
FIXTURE_FILES = sorted(FIXTURES.glob("*/*/*.json"))


def _typed(value: Any) -> Any:
    """A JSON value with every scalar tagged by its type, so 1, 1.0 and True differ."""
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_typed(item) for item in value]
    return (type(value).__name__, value)


def _endpoint(spec: dict[str, Any]) -> BuyerEndpoint:
    return BuyerEndpoint(
        buyer_id=spec["buyer_id"],
        ping_url=spec.get("ping_url"),
        post_url=spec.get("post_url"),
        secret=spec.get("secret", "").encode(),
        options=spec.get("options", {}),
        ping_template=(
            PingTemplate.model_validate(spec["ping_template"]) if "ping_template" in spec else None
        ),
        post_template=(
            PostTemplate.model_validate(spec["post_template"]) if "post_template" in spec else None
        ),
    )


def test_every_adapter_has_fixtures() -> None:
    with_fixtures = {
        path.parent.parent.name for path in FIXTURE_FILES if path.parent.name == "exemplary"
    }
    assert set(ADAPTERS) <= with_fixtures


@pytest.mark.parametrize(
    "path",
    FIXTURE_FILES,
    ids=[f"{p.parent.parent.name}/{p.parent.name}/{p.stem}" for p in FIXTURE_FILES],
)
def test_adapter_fixture(path: Path) -> None:
    case = json.loads(path.read_text())
    adapter = build_adapter(path.parent.parent.name, _endpoint(case["endpoint"]))
    expected = case["request"]
    canned = case["response"]
    response = HttpResponse(
        status=canned["status"],
        headers={name.lower(): value for name, value in canned.get("headers", {}).items()},
        body=canned.get("body", "").encode(),
    )
    reply_fields = dict(case["reply"])

    if "ping" in case:
        request = adapter.ping_request(PingOffer(**case["ping"]), case["timestamp"])
        outcome = BidOutcome(reply_fields.pop("outcome"))
        reply: BidReply | PostReply = adapter.read_bid(response)
        assert reply == BidReply(outcome, **reply_fields)
    else:
        request = adapter.post_request(PostOffer(**case["post"]), case["timestamp"])
        post_outcome = PostOutcome(reply_fields.pop("outcome"))
        reply = adapter.read_post(response)
        assert reply == PostReply(post_outcome, **reply_fields)

    assert request.method == expected["method"]
    assert request.url == expected["url"]
    assert [list(pair) for pair in request.all_headers] == expected["headers"]
    if "body_text" in expected:
        assert request.body.decode() == expected["body_text"]
    else:
        assert _typed(orjson.loads(request.body)) == _typed(expected["body"])
