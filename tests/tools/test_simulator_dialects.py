"""Simulated buyers speaking other APIs than ours (form with XML answers, XML, custom
JSON), over real loopback HTTP: what they read, what they answer, what they refuse."""

from __future__ import annotations

import base64
import random
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
import pytest
import yaml

from buyers.adapter import HttpResponse, PingOffer, PostOffer
from buyers.registry import adapter_for
from buyers.signing import sign
from exchange.config import parse_config
from exchange.core.outcomes import BidOutcome, PostOutcome
from exchange.tools.demo import PII_FIELDS, buyer_specs, demo_config
from exchange.tools.dialects import Dialect
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec, load_specs

FORM_KEY = "form-key-123"
CRM_LOGIN = "exchange:crm-password"
PX_KEY = "px-key-456"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
XML = {"Content-Type": "application/xml", "Authorization": "Basic " + base64.b64encode(
    CRM_LOGIN.encode()).decode()}  # fmt: skip
PX = {"Content-Type": "application/json", "X-Api-Key": PX_KEY}
CRM_LEAD = (
    b"<Lead><Contact><Zip>90210</Zip><State>CA</State><Email>a@b.co</Email></Contact>"
    b"<Profile><Age>40</Age></Profile></Lead>"
)
PX_LEAD = {"ContactData": {"ZipCode": "90210", "State": "CA"}, "Person": {"Age": 40}}


def form_buyer(buyer_id: str = "form", **behaviour: Any) -> SimulatedBuyerSpec:
    return SimulatedBuyerSpec(buyer_id, dialect=Dialect("form", api_key=FORM_KEY), **behaviour)


def xml_buyer(buyer_id: str = "crm", **behaviour: Any) -> SimulatedBuyerSpec:
    return SimulatedBuyerSpec(buyer_id, dialect=Dialect("xml", api_key=CRM_LOGIN), **behaviour)


def px_buyer(buyer_id: str = "px", **behaviour: Any) -> SimulatedBuyerSpec:
    dialect = Dialect("custom_json", api_key=PX_KEY)
    return SimulatedBuyerSpec(buyer_id, dialect=dialect, **behaviour)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def send(
    client: aiohttp.ClientSession,
    url: str,
    body: bytes | str = b"",
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, Mapping[str, str], bytes]:
    data = body.encode() if isinstance(body, str) else body
    async with client.request(method, url, data=data, headers=dict(headers or {})) as response:
        return response.status, response.headers, await response.read()


def xml_answer(body: bytes) -> dict[str, str]:
    root = ElementTree.fromstring(body)
    return {"root": root.tag, **{child.tag: child.text or "" for child in root}}


# --- form fields in, XML out (boberdoo-like)


async def test_form_buyer_reads_form_fields_and_bids_in_xml(client: aiohttp.ClientSession) -> None:
    async with BuyerSimulator([form_buyer(bid_cents=(666, 666))]) as sim:
        body = urlencode({"Key": FORM_KEY, "ZipCode": "90210", "State": "CA", "Age": "40"})
        status, headers, raw = await send(client, sim.ping_url("form"), body, FORM)
        assert status == 200
        assert headers["Content-Type"].startswith("application/xml")
        assert xml_answer(raw) == {
            "root": "response",
            "status": "Matched",
            "lead_id": "bid-1",
            "price": "6.66",
        }
        (seen,) = sim.received("form")
        assert seen.fields == {"zip": "90210", "state": "CA", "age": "40"}


async def test_form_buyer_takes_a_get_with_the_fields_and_key_in_the_query_string(
    client: aiohttp.ClientSession,
) -> None:
    async with BuyerSimulator([form_buyer()]) as sim:
        query = urlencode({"Key": FORM_KEY, "ZipCode": "75001", "State": "TX"})
        status, _, raw = await send(client, f"{sim.ping_url('form')}?{query}", method="GET")
        assert (status, xml_answer(raw)["status"]) == (200, "Matched")
        assert sim.received("form")[0].fields == {"zip": "75001", "state": "TX"}


async def test_form_buyer_without_a_bid_answers_unmatched(client: aiohttp.ClientSession) -> None:
    async with BuyerSimulator([form_buyer(no_bid_rate=1.0)]) as sim:
        body = urlencode({"Key": FORM_KEY, "ZipCode": "90210", "State": "CA"})
        status, _, raw = await send(client, sim.ping_url("form"), body, FORM)
        answer = xml_answer(raw)
        assert (status, answer["status"]) == (200, "Unmatched")
        assert "price" not in answer
        assert sim.counters("form").no_bids == 1


async def test_form_post_naming_its_pings_lead_id_is_matched(
    client: aiohttp.ClientSession,
) -> None:
    async with BuyerSimulator([form_buyer()]) as sim:
        ping = urlencode({"ZipCode": "90210", "State": "CA"})
        _, _, raw = await send(client, f"{sim.ping_url('form')}?Key={FORM_KEY}", ping, FORM)
        lead_id = xml_answer(raw)["lead_id"]
        post = urlencode({"Key": FORM_KEY, "ZipCode": "90210", "State": "CA",
                          "Lead_ID": lead_id, "Email": "a@b.co", "Price": "12.50"})  # fmt: skip
        status, _, raw = await send(client, sim.post_url("form"), post, FORM)
        answer = xml_answer(raw)
        assert (status, answer["status"]) == (200, "Matched")
        assert answer["lead_id"].startswith("lead-")
        assert sim.received("form")[1].fields == {
            "zip": "90210", "state": "CA", "bid_id": lead_id, "email": "a@b.co", "price": "12.50",
        }  # fmt: skip


async def test_form_post_of_an_unknown_lead_id_is_unmatched(client: aiohttp.ClientSession) -> None:
    async with BuyerSimulator([form_buyer()]) as sim:
        post = urlencode({"Key": FORM_KEY, "ZipCode": "90210", "State": "CA", "Lead_ID": "x"})
        status, _, raw = await send(client, sim.post_url("form"), post, FORM)
        assert status == 200
        assert xml_answer(raw) == {"root": "response", "status": "Unmatched",
                                   "reason": "unknown bid id"}  # fmt: skip
        assert sim.counters("form").rejected == 1


async def test_form_buyer_rejecting_says_unmatched_with_a_reason(
    client: aiohttp.ClientSession,
) -> None:
    async with BuyerSimulator([form_buyer(reject_rate=1.0)]) as sim:
        ping = urlencode({"Key": FORM_KEY, "ZipCode": "90210", "State": "CA"})
        _, _, raw = await send(client, sim.ping_url("form"), ping, FORM)
        post = f"{ping}&Lead_ID={xml_answer(raw)['lead_id']}"
        _, _, raw = await send(client, sim.post_url("form"), post, FORM)
        answer = xml_answer(raw)
        assert (answer["status"], answer["reason"]) == ("Unmatched", "simulated reject")


@pytest.mark.parametrize("key", [None, "", "wrong-key"])
async def test_form_buyer_refuses_a_bad_or_missing_key_with_401(
    client: aiohttp.ClientSession, key: str | None
) -> None:
    async with BuyerSimulator([form_buyer()]) as sim:
        fields = {"ZipCode": "90210", "State": "CA"} | ({"Key": key} if key is not None else {})
        status, _, raw = await send(client, sim.ping_url("form"), urlencode(fields), FORM)
        assert status == 401
        assert xml_answer(raw) == {"root": "response", "status": "Error",
                                   "error": "bad or missing Key"}  # fmt: skip
        assert (sim.counters("form").unauthorized, sim.counters("form").pings) == (1, 0)


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"Key=form-key-123&&ZipCode", 400, "body is not form-encoded"),
        (b"Key=form-key-123&State=\xff\xfe", 400, "body is not UTF-8"),
        (b"Key=form-key-123&State=CA", 400, "missing ZipCode"),
        (b"Key=form-key-123&ZipCode=&State=", 400, "missing ZipCode, State"),
    ],
)
async def test_form_buyer_refuses_an_unreadable_body_with_400_and_a_reason(
    client: aiohttp.ClientSession, body: bytes, status: int, reason: str
) -> None:
    async with BuyerSimulator([form_buyer()]) as sim:
        answer_status, _, raw = await send(client, sim.ping_url("form"), body, FORM)
        answer = xml_answer(raw)
        assert (answer_status, answer["status"]) == (status, "Error")
        assert answer["error"].startswith(reason)
        assert sim.counters("form").errors == 1
        assert sim.received("form")[0].fields is None


async def test_form_buyer_refuses_json_with_415(client: aiohttp.ClientSession) -> None:
    async with BuyerSimulator([form_buyer()]) as sim:
        status, _, raw = await send(client, sim.ping_url("form"), b"{}", PX)
        assert status == 415
        assert "application/x-www-form-urlencoded" in xml_answer(raw)["error"]


# --- XML in, XML out (a CRM)


async def test_crm_reads_the_xml_lead_and_bids(client: aiohttp.ClientSession) -> None:
    async with BuyerSimulator([xml_buyer(bid_cents=(1250, 1250))]) as sim:
        status, _, raw = await send(client, sim.ping_url("crm"), CRM_LEAD, XML)
        assert status == 200
        assert xml_answer(raw) == {"root": "Response", "Status": "Accepted",
                                   "Price": "12.50", "LeadId": "bid-1"}  # fmt: skip
        assert sim.received("crm")[0].fields == {
            "email": "a@b.co", "zip": "90210", "state": "CA", "age": "40",
        }  # fmt: skip


async def test_crm_bids_only_in_its_states(client: aiohttp.ClientSession) -> None:
    async with BuyerSimulator([xml_buyer(states=("TX", "FL"))]) as sim:
        status, _, raw = await send(client, sim.ping_url("crm"), CRM_LEAD, XML)
        assert status == 200
        assert xml_answer(raw) == {"root": "Response", "Status": "Rejected",
                                   "Reason": "out of area"}  # fmt: skip
        texan = CRM_LEAD.replace(b"<State>CA", b"<State>tx")
        _, _, raw = await send(client, sim.ping_url("crm"), texan, XML)
        assert xml_answer(raw)["Status"] == "Accepted"


async def test_crm_accepts_a_post_with_a_redirect_or_rejects_it_with_a_reason(
    client: aiohttp.ClientSession,
) -> None:
    async with BuyerSimulator([xml_buyer(), xml_buyer("picky", reject_rate=1.0)]) as sim:
        for buyer_id, verdict in (("crm", "Accepted"), ("picky", "Rejected")):
            _, _, raw = await send(client, sim.ping_url(buyer_id), CRM_LEAD, XML)
            reference = f"<LeadId>{xml_answer(raw)['LeadId']}</LeadId>".encode()
            post = CRM_LEAD.replace(b"</Lead>", reference + b"</Lead>")
            status, _, raw = await send(client, sim.post_url(buyer_id), post, XML)
            answer = xml_answer(raw)
            assert (status, answer["Status"]) == (200, verdict)
        assert answer["Reason"] == "simulated reject"
        assert sim.counters("crm").accepted == 1


async def test_crm_accepted_post_carries_its_lead_id_and_redirect(
    client: aiohttp.ClientSession,
) -> None:
    async with BuyerSimulator([xml_buyer()]) as sim:
        _, _, raw = await send(client, sim.ping_url("crm"), CRM_LEAD, XML)
        bid_id = xml_answer(raw)["LeadId"]
        post = CRM_LEAD.replace(b"</Lead>", f"<LeadId>{bid_id}</LeadId></Lead>".encode())
        _, _, raw = await send(client, sim.post_url("crm"), post, XML)
        answer = xml_answer(raw)
        assert answer["LeadId"].startswith("lead-")
        assert answer["Redirect"] == f"https://crm.example/welcome/{answer['LeadId']}"


@pytest.mark.parametrize(
    "authorization", [None, "Basic " + base64.b64encode(b"exchange:nope").decode(), "Basic !!"]
)
async def test_crm_refuses_bad_basic_credentials_with_401(
    client: aiohttp.ClientSession, authorization: str | None
) -> None:
    headers = {"Content-Type": "application/xml"}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with BuyerSimulator([xml_buyer()]) as sim:
        status, answer_headers, raw = await send(client, sim.ping_url("crm"), CRM_LEAD, headers)
        assert status == 401
        assert answer_headers["WWW-Authenticate"].startswith("Basic")
        assert xml_answer(raw)["Status"] == "Error"
        assert sim.counters("crm").unauthorized == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "body is not XML"),
        (b"<Lead><Contact>", "body is not XML"),
        (b"ZipCode=90210&State=CA", "body is not XML"),
        (b"<Order><Zip>90210</Zip></Order>", "root element must be <Lead>, not <Order>"),
        (b"<Lead><Contact><Zip><Z>1</Z></Zip></Contact></Lead>", "Contact.Zip must be text"),
        (b"<Lead><Contact><Zip>90210</Zip></Contact></Lead>", "missing Contact.State"),
    ],
)
async def test_crm_refuses_malformed_xml_with_400_and_a_reason(
    client: aiohttp.ClientSession, body: bytes, reason: str
) -> None:
    async with BuyerSimulator([xml_buyer()]) as sim:
        status, _, raw = await send(client, sim.ping_url("crm"), body, XML)
        answer = xml_answer(raw)
        assert (status, answer["Status"]) == (400, "Error")
        assert answer["Reason"].startswith(reason)


async def test_crm_field_names_and_root_are_configurable(client: aiohttp.ClientSession) -> None:
    dialect = Dialect("xml", fields={"Where.Postal": "zip", "Where.Region": "state"},
                      xml_root="LeadData")  # fmt: skip
    async with BuyerSimulator([SimulatedBuyerSpec("crm", dialect=dialect)]) as sim:
        body = b"<LeadData><Where><Postal>10001</Postal><Region>NY</Region></Where></LeadData>"
        status, _, raw = await send(client, sim.ping_url("crm"), body, XML)
        assert (status, xml_answer(raw)["Status"]) == (200, "Accepted")
        assert sim.received("crm")[0].fields == {"zip": "10001", "state": "NY"}


# --- custom JSON (px.com-like)


async def test_px_buyer_reads_nested_json_and_bids(client: aiohttp.ClientSession) -> None:
    async with BuyerSimulator([px_buyer(bid_cents=(1234, 1234))]) as sim:
        status, _, raw = await send(client, sim.ping_url("px"), orjson.dumps(PX_LEAD), PX)
        assert status == 200
        assert orjson.loads(raw) == {"TransactionId": "bid-1", "Success": True, "Payout": 12.34}
        assert sim.received("px")[0].fields == {"zip": "90210", "state": "CA", "age": "40"}


async def test_px_buyer_without_a_bid_pays_nothing(client: aiohttp.ClientSession) -> None:
    async with BuyerSimulator([px_buyer(no_bid_rate=1.0)]) as sim:
        status, _, raw = await send(client, sim.ping_url("px"), orjson.dumps(PX_LEAD), PX)
        assert status == 200
        assert orjson.loads(raw) == {"Success": False, "Payout": 0, "Message": "no match"}


async def test_px_post_is_sold_with_a_redirect_or_not_sold_with_a_message(
    client: aiohttp.ClientSession,
) -> None:
    async with BuyerSimulator([px_buyer(), px_buyer("picky", reject_rate=1.0)]) as sim:
        answers = {}
        for buyer_id in ("px", "picky"):
            _, _, raw = await send(client, sim.ping_url(buyer_id), orjson.dumps(PX_LEAD), PX)
            post = PX_LEAD | {"TransactionId": orjson.loads(raw)["TransactionId"]}
            status, _, raw = await send(client, sim.post_url(buyer_id), orjson.dumps(post), PX)
            assert status == 200
            answers[buyer_id] = orjson.loads(raw)
        sold = answers["px"]
        assert (sold["Success"], sold["Sold"]) == (True, True)
        assert sold["RedirectUrl"] == f"https://offers.example/claim/{sold['LeadId']}"
        assert answers["picky"] == {"Success": True, "Sold": False, "Message": "simulated reject"}


@pytest.mark.parametrize("key", [None, "wrong", PX_KEY.upper()])
async def test_px_buyer_refuses_a_bad_api_key_header_with_401(
    client: aiohttp.ClientSession, key: str | None
) -> None:
    headers = {"Content-Type": "application/json"} | ({"X-Api-Key": key} if key else {})
    async with BuyerSimulator([px_buyer()]) as sim:
        status, _, raw = await send(client, sim.ping_url("px"), orjson.dumps(PX_LEAD), headers)
        assert status == 401
        assert orjson.loads(raw) == {"Success": False,
                                     "Message": "bad or missing X-Api-Key header"}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "body is not JSON"),
        (b"", "body is not JSON"),
        (b"[1, 2]", "body must be a JSON object"),
        (b'{"ContactData": {"ZipCode": {"a": 1}, "State": "CA"}}', "ContactData.ZipCode must"),
        (b'{"ContactData": "90210"}', "missing ContactData.ZipCode, ContactData.State"),
    ],
)
async def test_px_buyer_refuses_malformed_json_with_400_and_a_reason(
    client: aiohttp.ClientSession, body: bytes, reason: str
) -> None:
    async with BuyerSimulator([px_buyer()]) as sim:
        status, _, raw = await send(client, sim.ping_url("px"), body, PX)
        answer = orjson.loads(raw)
        assert (status, answer["Success"]) == (400, False)
        assert answer["Message"].startswith(reason)


async def test_px_field_names_and_key_header_are_configurable(
    client: aiohttp.ClientSession,
) -> None:
    dialect = Dialect("custom_json", api_key="k", api_key_name="Authorization-Token",
                      fields={"lead.zip_code": "zip", "lead.region": "state"})  # fmt: skip
    async with BuyerSimulator([SimulatedBuyerSpec("px", dialect=dialect)]) as sim:
        body = orjson.dumps({"lead": {"zip_code": 33101, "region": "FL"}})
        headers = {"Content-Type": "application/json", "Authorization-Token": "k"}
        status, _, _ = await send(client, sim.ping_url("px"), body, headers)
        assert status == 200
        assert sim.received("px")[0].fields == {"zip": "33101", "state": "FL"}


# --- every dialect


async def test_every_dialect_decides_bids_alike_for_the_same_seed(
    client: aiohttp.ClientSession,
) -> None:
    behaviour: dict[str, Any] = {"no_bid_rate": 0.4, "bid_cents": (100, 5000), "seed": 11}
    specs = [form_buyer(**behaviour), xml_buyer(**behaviour), px_buyer(**behaviour),
             SimulatedBuyerSpec("native", **behaviour)]  # fmt: skip
    async with BuyerSimulator(specs) as sim:
        bids: dict[str, list[str | None]] = {}
        form = urlencode({"Key": FORM_KEY, "ZipCode": "90210", "State": "CA"})
        native = orjson.dumps({"ping_id": "p", "lead": {"zip": "90210", "state": "CA"}})
        for _ in range(20):
            _, _, raw = await send(client, sim.ping_url("form"), form, FORM)
            bids.setdefault("form", []).append(xml_answer(raw).get("price"))
            _, _, raw = await send(client, sim.ping_url("crm"), CRM_LEAD, XML)
            bids.setdefault("crm", []).append(xml_answer(raw).get("Price"))
            _, _, raw = await send(client, sim.ping_url("px"), orjson.dumps(PX_LEAD), PX)
            payout = orjson.loads(raw)["Payout"]
            bids.setdefault("px", []).append(f"{payout:.2f}" if payout else None)
            status, _, raw = await send(client, sim.ping_url("native"), native)
            bid = orjson.loads(raw)["bid"] if status == 200 else None
            bids.setdefault("native", []).append(f"{bid:.2f}" if bid else None)
        assert bids["form"] == bids["crm"] == bids["px"] == bids["native"]
        assert None in bids["form"] and len(set(bids["form"])) > 5


FAILING = [form_buyer(error_rate=1.0), xml_buyer(error_rate=1.0), px_buyer(error_rate=1.0)]


@pytest.mark.parametrize("spec", FAILING, ids=["form", "xml", "custom_json"])
async def test_simulated_errors_are_500s_in_the_buyers_own_format(
    client: aiohttp.ClientSession, spec: SimulatedBuyerSpec
) -> None:
    bodies = {"form": (urlencode({"Key": FORM_KEY, "ZipCode": "1", "State": "CA"}), FORM),
              "crm": (CRM_LEAD, XML), "px": (orjson.dumps(PX_LEAD), PX)}  # fmt: skip
    async with BuyerSimulator([spec]) as sim:
        body, headers = bodies[spec.buyer_id]
        status, _, raw = await send(client, sim.ping_url(spec.buyer_id), body, headers)
        assert status == 500
        assert b"simulated error" in raw


async def test_no_body_a_client_sends_gets_a_500(client: aiohttp.ClientSession) -> None:
    rng = random.Random(5)
    hostile = [
        b"", b"\x00", b"\xff" * 64, b"=" * 100, b"%" * 50, b"&" * 2000, b"a=%ZZ",
        b"<" * 500, b"<Lead>" * 5000, b"<?xml version='1.0' encoding='bogus'?><Lead/>",
        b'<!DOCTYPE Lead [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<Lead><Contact><Zip>&b;</Zip><State>CA</State></Contact></Lead>",
        b'<!DOCTYPE Lead [<!ENTITY x SYSTEM "file:///etc/passwd">]><Lead>&x;</Lead>',
        b"[" * 10000, b'{"ContactData": ' * 100, b"null", b"1e999", b'"text"',
        *(rng.randbytes(rng.randrange(1, 300)) for _ in range(30)),
    ]  # fmt: skip
    async with BuyerSimulator([form_buyer(), xml_buyer(), px_buyer()]) as sim:
        statuses = set()
        for buyer_id, headers in (("form", FORM), ("crm", XML), ("px", PX)):
            for url in (sim.ping_url(buyer_id), sim.post_url(buyer_id)):
                if buyer_id == "form":
                    url += f"?Key={FORM_KEY}"  # the body is judged, not the credential
                for body in hostile:
                    status, _, _ = await send(client, url, body, headers)
                    statuses.add(status)
        assert statuses <= {200, 400}
        assert 400 in statuses


async def test_unknown_paths_and_methods_are_refused_in_the_buyers_format(
    client: aiohttp.ClientSession,
) -> None:
    async with BuyerSimulator([xml_buyer(), px_buyer()]) as sim:
        status, _, raw = await send(client, sim.ping_url("crm").replace("/ping", "/bid"))
        assert (status, xml_answer(raw)["Reason"]) == (404, "not found")
        status, _, raw = await send(client, sim.ping_url("px"), method="GET")
        assert (status, orjson.loads(raw)["Message"]) == (405, "method not allowed")


async def test_a_dialect_buyer_with_a_secret_also_checks_our_signature(
    client: aiohttp.ClientSession,
) -> None:
    spec = SimulatedBuyerSpec("crm", secret=b"s3cret", dialect=Dialect("xml"))
    async with BuyerSimulator([spec]) as sim:
        status, _, raw = await send(client, sim.ping_url("crm"), CRM_LEAD, XML)
        assert (status, xml_answer(raw)["Reason"]) == (401, "missing signature headers")
        timestamp = int(time.time())
        signed = XML | {"X-Exchange-Timestamp": str(timestamp),
                        "X-Exchange-Signature": sign(b"s3cret", timestamp, CRM_LEAD)}  # fmt: skip
        status, _, raw = await send(client, sim.ping_url("crm"), CRM_LEAD, signed)
        assert (status, xml_answer(raw)["Status"]) == (200, "Accepted")
        assert sim.counters("crm").unauthorized == 1


# --- specs and config


def test_dialects_refuse_bad_settings() -> None:
    with pytest.raises(ValueError, match="format must be one of json, form, xml, custom_json"):
        Dialect("soap")
    with pytest.raises(ValueError, match="user:password"):
        Dialect("xml", api_key="no-colon")
    with pytest.raises(ValueError, match="not a dotted path of XML element names"):
        Dialect("xml", fields={"Contact/Zip": "zip"})
    with pytest.raises(ValueError, match="for the other formats"):
        Dialect("json", fields={"Zip": "zip"})
    with pytest.raises(ValueError, match="empty part"):
        Dialect("custom_json", fields={"a..b": "zip"})


def test_yaml_config_gives_buyers_a_dialect(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text(
        "buyers:\n"
        "  boberdoo: {dialect: form, bid_cents: [100, 200]}\n"
        "  crm: {dialect: {format: xml, api_key: 'u:p', xml_root: Lead}, states: [ca, tx]}\n"
        "  px:\n"
        "    dialect:\n"
        "      format: custom_json\n"
        "      api_key: k\n"
        "      api_key_name: X-Token\n"
        "      fields: {Contact.Zip: zip, Contact.State: state}\n"
    )
    by_id = {spec.buyer_id: spec for spec in load_specs(config, count=4)}
    assert by_id["boberdoo"].dialect == Dialect("form")
    assert by_id["crm"].dialect.api_key == "u:p"
    assert by_id["crm"].states == ("CA", "TX")
    assert by_id["px"].dialect.fields == {"Contact.Zip": "zip", "Contact.State": "state"}
    assert by_id["sim-buyer-4"].dialect.format == "json"
    config.write_text("buyers:\n  bad: {dialect: {format: xml, colour: red}}\n")
    with pytest.raises(ValueError, match="buyer 'bad': dialect: unknown key 'colour'"):
        load_specs(config)


def test_repo_simulator_config_has_a_form_and_an_xml_buyer() -> None:
    path = Path(__file__).resolve().parents[2] / "config" / "simulator.yaml"
    formats = {spec.buyer_id: spec.dialect.format for spec in load_specs(path)}
    assert formats["surequote-form"] == "form"
    assert formats["crm-direct"] == "xml"


# --- the exchange's own http adapter, configured from the simulator, reading it


async def _exchange_round(
    client: aiohttp.ClientSession, sim: BuyerSimulator, buyer_id: str
) -> tuple[Any, Any]:
    """One ping and one post from the exchange's adapter built from the demo's config."""
    specs = [sim.spec(b) for b in sim.buyer_ids() if b != "backfill-fixed"]
    loaded = parse_config(demo_config(sim, specs), "<demo>", env={})
    buyer = next(b for b in loaded.config.buyers if b.id == buyer_id)
    adapter = adapter_for(buyer, loaded.config.verticals)
    lead = {"zip": "90210", "state": "CA", "age": 40, "credit_rating": "good"}
    full = lead | {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
                   "phone": "+14155550123"}  # fmt: skip

    async def exchange(request: Any) -> HttpResponse:
        async with client.request(request.method, request.url, headers=list(request.all_headers),
                                  data=request.body) as response:  # fmt: skip
            headers = {k.lower(): v for k, v in response.headers.items()}
            return HttpResponse(response.status, headers, await response.read())

    offer = PingOffer("ping-1", "auto_insurance", 300, 100, lead)
    bid = adapter.read_bid(await exchange(adapter.ping_request(offer, int(time.time()))))
    post = PostOffer("ping-1", bid.bid_id, bid.price_cents or 0, "auto_insurance", full)
    verdict = adapter.read_post(await exchange(adapter.post_request(post, int(time.time()))))
    return bid, verdict


async def test_demo_http_buyers_are_read_by_the_exchanges_adapter(
    client: aiohttp.ClientSession,
) -> None:
    specs = [*buyer_specs(8), SimulatedBuyerSpec("backfill-fixed")]
    specs = [s if s.dialect.format == "json" else
             SimulatedBuyerSpec(s.buyer_id, dialect=s.dialect, bid_cents=(1500, 1500), seed=1)
             for s in specs]  # fmt: skip
    async with BuyerSimulator(specs) as sim:
        http_buyers = [s.buyer_id for s in specs if s.dialect.format != "json"]
        assert {sim.spec(b).dialect.format for b in http_buyers} == {"form", "xml", "custom_json"}
        assert len(http_buyers) * 2 <= len(specs)
        for buyer_id in http_buyers:
            bid, verdict = await _exchange_round(client, sim, buyer_id)
            assert (bid.outcome, bid.price_cents, bid.bid_id) == (BidOutcome.BID, 1500, "bid-1")
            assert verdict.outcome is PostOutcome.ACCEPTED, (buyer_id, verdict)
            assert verdict.buyer_lead_id == "lead-2"
            ping, post = sim.received(buyer_id)
            assert ping.fields is not None and post.fields is not None
            assert not PII_FIELDS & set(ping.fields)
            assert post.fields["bid_id"] == "bid-1"
            assert post.fields["email"] == "ada@example.com"
            assert float(post.fields["price"]) == 15.0
        redirects = {b: (await _exchange_round(client, sim, b))[1].redirect_url
                     for b in http_buyers}  # fmt: skip
        assert [url is not None for url in redirects.values()] == [
            sim.spec(b).dialect.format != "form" for b in http_buyers
        ]


def test_demo_config_keeps_most_buyers_on_our_json() -> None:
    specs = buyer_specs(8)
    formats = [spec.dialect.format for spec in specs]
    assert formats.count("json") >= len(specs) / 2
    assert {"form", "xml", "custom_json"} <= set(formats)
    assert all(not spec.secret for spec in specs if spec.dialect.format != "json")


def test_example_config_loads_with_its_http_buyers() -> None:
    path = Path(__file__).resolve().parents[2] / "config" / "example.yaml"
    loaded = parse_config(path.read_text(), str(path), env={})
    adapters = {buyer.id: buyer.adapter for buyer in loaded.config.buyers}
    assert adapters["surequote-form"] == adapters["crm-direct"] == adapters["market-json"] == "http"
    raw = yaml.safe_load(path.read_text())
    formats = {b["id"]: b["post"]["format"] for b in raw["buyers"] if "post" in b}
    assert formats == {"surequote-form": "form", "crm-direct": "xml", "market-json": "json"}
