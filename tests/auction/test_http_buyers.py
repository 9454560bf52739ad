"""Buyers configured, not coded (SPEC section 8), through a whole auction: a form-encoded
buyer answering XML and an XML CRM, each a real HTTP server on 127.0.0.1, against the real
exchange and database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from lxml import etree

from tests.support.harness import FULL_LEAD, make_config, running_exchange


@dataclass
class Seen:
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)


@asynccontextmanager
async def buyers(crm_verdict: str = "Accepted") -> AsyncIterator[tuple[str, Seen]]:
    """Two buyers on one server: ``/form/*`` (boberdoo-like) and ``/crm/*`` (XML)."""
    seen = Seen()

    async def record(request: web.Request) -> bytes:
        body = await request.read()
        seen.requests.append((request.method, request.path_qs, dict(request.headers), body))
        return body

    async def form_ping(request: web.Request) -> web.Response:
        fields = dict(parse_qsl((await record(request)).decode()))
        if request.headers.get("X-Api-Key") != "form-key-123" or fields.get("Key") != "K1":
            return web.Response(status=401)
        price = "20.00" if fields.get("State") == "California" else "0.00"
        xml = (
            "<response><status>Matched</status><lead_id>F-1</lead_id>"
            f"<price>{price}</price></response>"
        )
        return web.Response(text=xml, content_type="text/xml")

    async def form_post(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(
            text="<response><status>Matched</status><lead_id>F-LEAD</lead_id></response>",
            content_type="text/xml",
        )

    async def crm_ping(request: web.Request) -> web.Response:
        root = etree.fromstring(await record(request))
        assert root.tag == "Lead"
        return web.Response(
            text='<?xml version="1.0"?><Response><Price>25.00</Price><Id>crm-77</Id></Response>',
            content_type="application/xml",
        )

    async def crm_post(request: web.Request) -> web.Response:
        await record(request)
        reason = "" if crm_verdict == "Accepted" else "<Reason>out of area</Reason>"
        return web.Response(
            text=f"<Response><Status>{crm_verdict}</Status>{reason}<LeadId>CRM-9</LeadId>"
            "<Redirect>https://crm.example/thanks?id=9</Redirect></Response>",
            content_type="application/xml",
        )

    app = web.Application()
    app.router.add_post("/form/ping", form_ping)
    app.router.add_post("/form/post", form_post)
    app.router.add_post("/crm/ping", crm_ping)
    app.router.add_post("/crm/post/{bid}", crm_post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


def http_buyers(base: str) -> list[dict[str, Any]]:
    form: dict[str, Any] = {
        "id": "form-insurer",
        "adapter": "http",
        "verticals": ["auto_insurance"],
        "ping": {
            "url": f"{base}/form/ping",
            "format": "form",
            "fields": {"ZipCode": "zip", "State": "state", "Age": "age"},
            "constants": {"Key": "K1", "Mode": "ping"},
            "values": {"State": {"CA": "California"}},
            "auth": {"type": "header", "name": "X-Api-Key", "value": "form-key-123"},
            "bid": "/response/price",
            "bid_id": "/response/lead_id",
        },
        "post": {
            "url": f"{base}/form/post",
            "format": "form",
            "fields": {"Lead_ID": "bid_id", "Phone": "phone", "First": "first_name"},
            "transforms": {"Phone": "dashed"},
            "auth": {"type": "header", "name": "X-Api-Key", "value": "form-key-123"},
            "accepted": "/response/status",
            "accepted_values": ["Matched"],
            "buyer_lead_id": "/response/lead_id",
        },
    }
    crm: dict[str, Any] = {
        "id": "xml-crm",
        "adapter": "http",
        "verticals": ["auto_insurance"],
        "ping": {
            "url": f"{base}/crm/ping",
            "format": "xml",
            "root": "Lead",
            "fields": {"Contact.Zip": "zip", "Contact.State": "state"},
            "bid": "/Response/Price",
            "bid_id": "/Response/Id",
        },
        "post": {
            "url": f"{base}/crm/post/{{bid_id}}",
            "format": "xml",
            "root": "Lead",
            "fields": {
                "Contact.FirstName": "first_name",
                "Contact.Phone": "phone",
                "Price": "price",
            },
            "transforms": {"Contact.Phone": "digits10"},
            "auth": {"type": "basic", "username": "lx", "password": "pw"},
            "accepted": "/Response/Status",
            "accepted_values": ["Accepted"],
            "reason": "/Response/Reason",
            "buyer_lead_id": "/Response/LeadId",
            "redirect_url": "/Response/Redirect",
        },
    }
    return [form, crm]


async def test_xml_crm_outbids_the_form_buyer_and_gets_its_lead_as_xml(
    database_url: str,
) -> None:
    async with buyers() as (base, seen):
        config = make_config(http_buyers(base))
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping()
            assert answer["status"] == "bid"
            assert answer["price"] == 21.25  # 25.00 x 0.85
            sold = await ex.post(answer["ping_id"])
            assert sold["status"] == "sold"
            assert sold.get("redirect_url") == "https://crm.example/thanks?id=9"
            story = await ex.story(answer["ping_id"])
            assert story["sale"]["buyer"] == "xml-crm"
            bids = {b["buyer"]: b for b in story["buyers"]}
            assert bids["form-insurer"]["bid"] == 20.0
            assert bids["xml-crm"]["bid"] == 25.0

    _, path, headers, body = seen.requests[-1]
    assert path == "/crm/post/crm-77"  # the buyer's own bid id, back in the URL
    assert headers["Authorization"].startswith("Basic ")
    lead = etree.fromstring(body)
    assert lead.findtext("Contact/FirstName") == FULL_LEAD["first_name"]
    assert lead.findtext("Contact/Phone") == "4155552671"
    assert lead.findtext("Price") == "25.00"


async def test_a_rejecting_crm_falls_back_to_the_form_buyer(database_url: str) -> None:
    async with buyers(crm_verdict="Rejected") as (base, seen):
        config = make_config(http_buyers(base))
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping()
            sold = await ex.post(answer["ping_id"])
            assert sold["status"] == "sold"
            assert "redirect_url" not in sold or sold["redirect_url"] is None
            story = await ex.story(answer["ping_id"])
            assert story["sale"]["buyer"] == "form-insurer"
            attempts = story["post_attempts"]
            assert [(a["buyer"], a["outcome"]) for a in attempts] == [
                ("xml-crm", "rejected"),
                ("form-insurer", "accepted"),
            ]
            assert attempts[0]["reason"] == "out of area"

    form_post = next(r for r in seen.requests if r[1] == "/form/post")
    fields = dict(parse_qsl(form_post[3].decode()))
    assert fields == {"Lead_ID": "F-1", "Phone": "415-555-2671", "First": "Ada"}
