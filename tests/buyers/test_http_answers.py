"""Reading configured buyers' answers, and checking their templates at load (SPEC
section 8).

- The direct walker buyers/answers.py uses for plain JSON paths (``$.a.b[0]``) finds
  exactly what the python-jsonpath library finds, on any document (Hypothesis).
- ``read_bid`` and ``read_post`` never raise, whatever the status and bytes: random
  bytes, random JSON, XML-ish text, under JSONPath, XPath and ``re:`` paths. An error
  always carries a reason; a bid is a positive whole number of cents; what is kept fits
  the ledger's columns.
- An answer with a DTD is refused however it is encoded.
- A template mistake fails the config load with the buyer's key path
  (``buyers[0].ping.fields.Zip``), through exchange.config.parse_config on YAML text.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import jsonpath
import orjson
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from buyers.adapter import BidReply, BuyerEndpoint, HttpResponse, PostReply
from buyers.answers import compile_path
from buyers.http_adapter import HttpAdapter
from exchange.config import ConfigError, parse_config
from exchange.core.http_templates import PingTemplate, PostTemplate
from exchange.core.outcomes import BidOutcome, PostOutcome
from exchange.core.storable import MAX_ID_CHARS, MAX_REASON_CHARS
from tests.support.harness import config_text

MAX_REDIRECT_CHARS = 2048

# ---- (a) the direct walker agrees with python-jsonpath --------------------------------

# Member names a plain path may hold, including words python-jsonpath could read as its
# own keywords, and a dash (outside RFC 9535's shorthand, accepted by both readers).
NAMES = [
    "a", "b", "price", "Payout", "bids", "data", "_x", "a-b", "A1", "true", "false",
    "null", "length", "keys", "in", "and", "or", "not", "nil", "undefined", "missing",
    "size", "if", "key",
]  # fmt: skip
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
json_documents = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=3), children, max_size=5)
    ),
    max_leaves=25,
)
name_step = st.sampled_from(NAMES).map(lambda name: f".{name}")
index_step = st.integers(min_value=0, max_value=6).map(lambda index: f"[{index}]")


@st.composite
def simple_paths(draw: st.DrawFn, document: Any) -> str:
    """A plain path: half the time one that exists in ``document``, else any."""
    steps: list[str] = []
    node = document
    while draw(st.booleans()):
        if isinstance(node, dict) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(k for k in node if k in NAMES) or [None]))
            if key is not None:
                steps.append(f".{key}")
                node = node[key]
                continue
        if isinstance(node, list) and node and draw(st.booleans()):
            index = draw(st.integers(min_value=0, max_value=len(node) - 1))
            steps.append(f"[{index}]")
            node = node[index]
            continue
        steps.append(draw(name_step | index_step))
        node = None
    return "$" + "".join(steps)


@settings(max_examples=500)
@given(st.data())
def test_direct_walker_finds_what_python_jsonpath_finds(data: st.DataObject) -> None:
    document = data.draw(json_documents)
    source = data.draw(simple_paths(document))
    path = compile_path(source)
    assert path.kind == "json"
    if isinstance(document, str):
        # python-jsonpath reads a str argument as JSON text, not as a JSON string value;
        # a string value has no members (RFC 9535), so only $ finds anything in it.
        assert path.find(document) == ([document] if source == "$" else [])
    else:
        assert path.find(document) == jsonpath.compile(source).findall(document)


@pytest.mark.parametrize("source", ["$", "$.a", "$[0]", "$.a.b[2].c", "$.true.null", "$.a-b"])
def test_plain_paths_agree_on_containers_of_the_wrong_kind(source: str) -> None:
    for document in ({"a": [1]}, [{"a": {"b": [0, 1, {"c": 5}]}}], 7, None, [], True):
        path = compile_path(source)
        assert path.find(document) == jsonpath.compile(source).findall(document)


# ---- (b) reading answers never raises ---------------------------------------------------

PING_PATHS = [
    {"bid": "$.price", "bid_id": "$.id", "reason": "$.msg"},
    {"bid": "$.bids[*].payout", "bid_id": "$.bids[*].id", "reason": "$.reason"},
    {"bid": "$..price", "bid_id": "$..id"},
    {"bid": "$.data.bid", "bid_id": "$.data.lead_token"},
    {"bid": "/response/price", "bid_id": "/response/lead_id", "reason": "/response/error"},
    {"bid": "/r/@price", "bid_id": "/r/@id"},
    {"bid": "//leg/@payout", "bid_id": "//leg/@id", "reason": "string(/r)"},
    {"bid": "number(/r/price)", "bid_id": "count(//id)", "reason": "boolean(/r)"},
    {"bid": "string(/r/price)", "bid_id": "/r/id/text()"},
    {"bid": r"re:Price>(.+?)</Price", "bid_id": r"re:id=(\w*)", "reason": r"re:(x)?y"},
    {"bid": r"re:(\d+)?", "bid_id": r"re:(.*)"},
]
POST_PATHS = [
    {"accepted": "$.status", "reason": "$.msg", "buyer_lead_id": "$.lead_id",
     "redirect_url": "$.redirect_url"},
    {"accepted": "$..status", "reason": "$..reason", "buyer_lead_id": "$..id",
     "redirect_url": "$..url"},
    {"accepted": "/Response/Status", "reason": "/Response/Reason",
     "buyer_lead_id": "/Response/LeadId", "redirect_url": "/Response/Redirect"},
    {"accepted": "count(//ok)", "reason": "string(/r)", "buyer_lead_id": "number(/r/id)",
     "redirect_url": "boolean(/r)"},
    {"accepted": r"re:^\s*(-?\d+)", "reason": r"re:\|\s*(.*)", "buyer_lead_id": r"re:(x)?",
     "redirect_url": r"re:(https?://\S*)"},
]  # fmt: skip
ANSWER_KEYS = [
    "price", "id", "msg", "bids", "payout", "data", "bid", "lead_token", "status", "reason",
    "lead_id", "redirect_url", "url",
]  # fmt: skip
XML_PIECES = [
    "<", ">", "</", "/>", "<r>", "</r>", "<r price='7.5' id='x'>", "<price>", "</price>",
    "<response>", "</response>", "<status>", "</status>", "<lead_id>", "</lead_id>",
    "<Response><Status>", "</Status></Response>", "<leg payout='", "'/>", "<id>", "</id>",
    "<ok/>", "<!DOCTYPE r [", "<!ENTITY a 'x'>", "]>", "&a;", "&amp;", "&#0;", "&#x1F600;",
    "<![CDATA[", "]]>", "<!--", "-->", "<?pi x?>", "<?xml version='1.0'?>",
    " xmlns='urn:x'", " xmlns:p='urn:p'", "<p:price>", "12.50", "-1", "1e999", "0.004",
    "NaN", "\u00e9", "\U0001f600", " ", "\n", "Price>3.25</Price", "id=abc", "1 | OK",
    "Matched", "Unmatched", "\x01",
]  # fmt: skip

json_answers = st.recursive(
    json_scalars | st.sampled_from(["12.50", "1.0000", "$5", "1e3", "-2", " 7 ", "", "Matched"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(ANSWER_KEYS), children)
    ),
    max_leaves=20,
).map(lambda document: orjson.dumps(document))
xml_answers = st.lists(st.sampled_from(XML_PIECES) | st.text(max_size=4), max_size=20).map(
    lambda pieces: "".join(pieces).encode("utf-8", errors="surrogatepass")
)
# Answers of the shapes the paths above expect, with any value in them: these reach the
# price, verdict, id and redirect readers rather than stopping at the parser.
good_values = st.one_of(
    st.decimals(min_value=0, max_value=10_000, places=2).map(str),
    st.floats(min_value=0.01, max_value=10_000),
    st.sampled_from(["12.50", "1.0000", "0", "ok", " Matched ", "Unmatched", "1", "true"]),
    st.sampled_from(["https://buyer.example/thanks", "x" * 3000, "y" * 129]),
)
answer_values = st.one_of(
    good_values, good_values, good_values, json_scalars, st.lists(json_scalars, max_size=3)
)
text_values = answer_values.map(lambda value: value if isinstance(value, str) else str(value))


@st.composite
def shaped_json(draw: st.DrawFn) -> bytes:
    leg = st.fixed_dictionaries({}, optional={"payout": answer_values, "id": answer_values})
    document = draw(
        st.fixed_dictionaries(
            {
                "price": answer_values, "status": answer_values, "bids": st.lists(leg, max_size=4),
                "data": st.fixed_dictionaries(
                    {}, optional={"bid": answer_values, "lead_token": answer_values}
                ),
            },
            optional={
                "id": answer_values, "msg": answer_values, "reason": answer_values,
                "lead_id": answer_values, "redirect_url": answer_values, "url": answer_values,
            },
        )
    )  # fmt: skip
    return orjson.dumps(document)


@st.composite
def shaped_xml(draw: st.DrawFn) -> bytes:
    def text() -> str:
        value = draw(text_values)
        return value if draw(st.integers(0, 4)) == 0 else xml_escape(value)

    template = draw(
        st.sampled_from(
            [
                "<response><status>{}</status><lead_id>{}</lead_id><price>{}</price>"
                "<error>{}</error></response>",
                "<Response><Status>{}</Status><LeadId>{}</LeadId><Redirect>{}</Redirect>"
                "<Reason>{}</Reason></Response>",
                "<r price='{}' id='{}'><price>{}</price><id>{}</id></r>",
                "<r><leg payout='{}' id='{}'/><leg payout='{}'/><ok/>{}</r>",
                "<?xml version='1.0'?><r><price><![CDATA[{}]]></price><id>{}</id>Price>{}</Price"
                " id={}</r>",
            ]
        )
    )
    return template.format(text(), text(), text(), text()).encode("utf-8", "surrogatepass")


def xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;")


@st.composite
def shaped_text(draw: st.DrawFn) -> bytes:
    code, reason, price, bid_id = (draw(text_values) for _ in range(4))
    text = f"{code} | {reason}\nPrice>{price}</Price id={bid_id} {draw(text_values)}"
    return text.encode("utf-8", "surrogatepass")


random_bodies = st.one_of(
    st.binary(max_size=300),
    json_answers,
    xml_answers,
    json_answers.map(lambda body: body[: len(body) // 2]),
    xml_answers.map(lambda body: body.decode("utf-8", errors="ignore").encode("utf-16")),
)
# Well-formed answers with good prices and verdicts, and any text in ids and reasons:
# these reach the bid, sale and lead id readers.
good_prices = st.decimals(min_value=0, max_value=10_000, places=2).map(str) | st.floats(
    min_value=0, max_value=10_000
)
verdicts = st.sampled_from(["ok", " OK ", "1", "Matched", "true", "Unmatched", "Rejected"])
any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40) | st.sampled_from(
    ["https://buyer.example/thanks?id=1", "x" * 3000, "y" * 129, " ", ""]
)


def _xml_text(text: str) -> str:
    return xml_escape(re.sub("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]", "", text))


BIG_MARK = "<an integer past 64 bits>"
BIG = st.just(BIG_MARK)


@st.composite
def valid_json(draw: st.DrawFn) -> bytes:
    ids = st.one_of(any_text, st.integers(min_value=0, max_value=2**64 - 1), st.none(), BIG)
    bids = st.lists(st.fixed_dictionaries({"payout": good_prices, "id": ids}), max_size=4)
    document = {
        "price": draw(good_prices), "id": draw(ids), "msg": draw(any_text),
        "bids": draw(bids), "data": {"bid": draw(good_prices), "lead_token": draw(ids)},
        "status": draw(verdicts), "lead_id": draw(ids), "redirect_url": draw(any_text),
        "reason": draw(any_text), "url": draw(any_text),
    }  # fmt: skip
    # Integers past 64 bits, which orjson does not write, spliced in as JSON text.
    big = str(draw(st.integers(min_value=2**64, max_value=10**40))).encode()
    return orjson.dumps(document).replace(b'"%s"' % BIG_MARK.encode(), big)


@st.composite
def valid_xml(draw: st.DrawFn) -> bytes:
    price, verdict = draw(good_prices), draw(verdicts)
    lead_id, reason, redirect = (_xml_text(draw(any_text)) for _ in range(3))
    return (
        f"<?xml version='1.0' encoding='UTF-8'?><r price='{price}' id='{lead_id}'>"
        f"<response><status>{verdict}</status><lead_id>{lead_id}</lead_id>"
        f"<price>{price}</price><error>{reason}</error></response>"
        f"<Response><Status>{verdict}</Status><LeadId>{lead_id}</LeadId>"
        f"<Redirect>{redirect}</Redirect><Reason>{reason}</Reason></Response>"
        f"<leg payout='{price}' id='{lead_id}'/><price>{price}</price><id>{lead_id}</id><ok/></r>"
    ).encode()


@st.composite
def valid_text(draw: st.DrawFn) -> bytes:
    verdict, price, reason = draw(verdicts), draw(good_prices), draw(any_text)
    bid_id = draw(st.from_regex(r"\w{0,20}", fullmatch=True))
    return f"{verdict} | {reason}\nPrice>{price}</Price id={bid_id}".encode()


SHAPED = {
    "json": shaped_json() | valid_json(),
    "xml": shaped_xml() | valid_xml(),
    "text": shaped_text() | valid_text(),
}


def bodies_for(kind: str) -> st.SearchStrategy[bytes]:
    """Random bytes and documents, and answers shaped for the path's kind."""
    return st.one_of(random_bodies, SHAPED[kind], SHAPED[kind])


statuses = st.one_of(
    st.just(200), st.just(200), st.sampled_from([201, 204]), st.integers(min_value=0, max_value=999)
)
content_types = st.sampled_from(
    ["", "application/json", "text/xml", "text/html; charset=UTF-8", "text/plain", "x/y;;;"]
)


def http_adapter(ping: dict[str, Any], post: dict[str, Any]) -> HttpAdapter:
    ping_template = PingTemplate.model_validate(
        {"url": "https://buyer.example/ping", "namespaces": {"p": "urn:p"}, **ping}
    )
    post_template = PostTemplate.model_validate(
        {"url": "https://buyer.example/post", "accepted_values": ["ok", "1", "Matched", "true"],
         **post}
    )  # fmt: skip
    return HttpAdapter(
        BuyerEndpoint(
            buyer_id="answers",
            ping_url=ping_template.url,
            post_url=post_template.url,
            secret=b"",
            ping_template=ping_template,
            post_template=post_template,
        )
    )


def _kind(source: str) -> str:
    return "json" if source.startswith("$") else "text" if source.startswith("re:") else "xml"


PING_READERS = [(_kind(ping["bid"]), http_adapter(ping, POST_PATHS[0])) for ping in PING_PATHS]
POST_READERS = [(_kind(post["accepted"]), http_adapter(PING_PATHS[0], post)) for post in POST_PATHS]


def check_bid_reply(reply: BidReply) -> None:
    assert isinstance(reply, BidReply)
    assert reply.outcome in (BidOutcome.BID, BidOutcome.NO_BID, BidOutcome.ERROR)
    if reply.outcome == BidOutcome.BID:
        assert isinstance(reply.price_cents, int) and reply.price_cents > 0
    else:
        assert reply.price_cents is None and reply.bid_id is None
    if reply.outcome == BidOutcome.ERROR:
        assert isinstance(reply.reason, str) and reply.reason.strip()
    if reply.reason is not None:
        assert 0 < len(reply.reason) <= MAX_REASON_CHARS
    if reply.bid_id is not None:
        assert isinstance(reply.bid_id, str) and 0 < len(reply.bid_id) <= MAX_ID_CHARS


def check_post_reply(reply: PostReply) -> None:
    assert isinstance(reply, PostReply)
    assert reply.outcome in (PostOutcome.ACCEPTED, PostOutcome.REJECTED, PostOutcome.ERROR)
    if reply.outcome != PostOutcome.ACCEPTED:
        assert reply.buyer_lead_id is None and reply.redirect_url is None
    if reply.outcome == PostOutcome.ERROR:
        assert isinstance(reply.reason, str) and reply.reason.strip()
    if reply.reason is not None:
        assert 0 < len(reply.reason) <= MAX_REASON_CHARS
    if reply.buyer_lead_id is not None:
        assert isinstance(reply.buyer_lead_id, str)
        assert 0 < len(reply.buyer_lead_id) <= MAX_ID_CHARS
    if reply.redirect_url is not None:
        assert isinstance(reply.redirect_url, str)
        assert 0 < len(reply.redirect_url) <= MAX_REDIRECT_CHARS


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), statuses, content_types)
def test_reading_any_ping_answer_never_raises(
    data: st.DataObject, status: int, content_type: str
) -> None:
    kind, adapter = data.draw(st.sampled_from(PING_READERS))
    body = data.draw(bodies_for(kind))
    response = HttpResponse(status, {"content-type": content_type}, body)
    reply = adapter.read_bid(response)
    check_bid_reply(reply)
    assert adapter.read_bid(response) == reply, "reading is deterministic"
    event(f"{kind} ping: {reply.outcome}")
    if status == 204:
        assert reply == BidReply(BidOutcome.NO_BID)
    elif not 200 <= status < 300:
        assert reply.outcome == BidOutcome.ERROR


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), statuses, content_types)
def test_reading_any_post_answer_never_raises(
    data: st.DataObject, status: int, content_type: str
) -> None:
    kind, adapter = data.draw(st.sampled_from(POST_READERS))
    body = data.draw(bodies_for(kind))
    response = HttpResponse(status, {"content-type": content_type}, body)
    reply = adapter.read_post(response)
    check_post_reply(reply)
    assert adapter.read_post(response) == reply, "reading is deterministic"
    event(f"{kind} post: {reply.outcome}")
    if not 200 <= status < 300:
        assert reply.outcome == PostOutcome.ERROR


@settings(max_examples=300)
@given(
    st.just(PING_READERS[0][1]),
    st.one_of(
        json_scalars,
        st.decimals(allow_nan=False, allow_infinity=False).map(str),
        st.from_regex(r"\s*-?[0-9]{0,14}(\.[0-9]{0,8})?\s*", fullmatch=True),
    ),
)
def test_a_price_is_read_exactly_or_refused(adapter: HttpAdapter, price: Any) -> None:
    """Whatever sits at the bid path: a bid of exactly the price rounded down to the cent,
    no bid for nothing/zero, or an error: never a float's rounding, never more."""
    body = orjson.dumps({"price": price})
    reply = adapter.read_bid(HttpResponse(200, {}, body))
    check_bid_reply(reply)
    if reply.outcome == BidOutcome.BID:
        exact = Decimal(price.strip() if isinstance(price, str) else repr(price))
        assert reply.price_cents == int((exact * 100).to_integral_value(rounding="ROUND_FLOOR"))


DTD_ANSWERS = {
    "billion_laughs": (
        '<?xml version="1.0" encoding="{enc}"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">'
        "]><r><price>5</price><id>&c;</id><status>ok</status></r>"
    ),
    "external_entity": (
        '<?xml version="1.0" encoding="{enc}"?><!DOCTYPE r [<!ENTITY x SYSTEM '
        '"file:///etc/passwd">]><r><price>5</price><id>&x;</id><status>ok</status></r>'
    ),
}


@pytest.mark.parametrize("kind", sorted(DTD_ANSWERS))
@pytest.mark.parametrize(
    ("codec", "declared"),
    [("utf-8", "UTF-8"), ("utf-8-sig", "UTF-8"), ("utf-16", "UTF-16"), ("utf-16-be", "UTF-16"),
     ("utf-32", "UTF-32")],
)  # fmt: skip
def test_an_answer_with_a_dtd_is_refused_in_any_encoding(
    kind: str, codec: str, declared: str
) -> None:
    adapter = http_adapter(
        {"bid": "/r/price", "bid_id": "/r/id"},
        {"accepted": "/r/status", "buyer_lead_id": "/r/id"},
    )
    body = DTD_ANSWERS[kind].replace("{enc}", declared).encode(codec)
    response = HttpResponse(200, {"content-type": "application/xml"}, body)
    bid = adapter.read_bid(response)
    post = adapter.read_post(response)
    assert (bid.outcome, post.outcome) == (BidOutcome.ERROR, PostOutcome.ERROR)
    assert "DTD" in (bid.reason or "") and "DTD" in (post.reason or "")


# ---- (c) template mistakes fail the load, named by key path ----------------------------

SOURCE = "buyers.yaml"
PING: dict[str, Any] = {
    "url": "https://crm.buyer.example/api/ping",
    "format": "form",
    "fields": {"ZipCode": "zip", "State": "state", "Age": "age"},
    "constants": {"SourceID": "LX-17"},
    "values": {"State": {"CA": "California"}},
    "auth": {"type": "header", "name": "X-Api-Key", "value": "crm-key-123"},
    "bid": "$.result.price",
    "bid_id": "$.result.id",
}
POST: dict[str, Any] = {
    "url": "https://crm.buyer.example/api/post",
    "format": "xml",
    "root": "Lead",
    "fields": {"Lead_ID": "bid_id", "FirstName": "first_name", "Phone": "phone",
               "ZipCode": "zip"},
    "transforms": {"Phone": "digits10"},
    "accepted": "/Response/Status",
    "accepted_values": ["Accepted", "OK"],
    "reason": "/Response/Reason",
    "buyer_lead_id": "/Response/LeadId",
    "redirect_url": "/Response/Redirect",
}  # fmt: skip


def http_buyer(buyer_id: str = "legacy-crm") -> dict[str, Any]:
    return {
        "id": buyer_id,
        "adapter": "http",
        "verticals": ["auto_insurance"],
        "ping": copy.deepcopy(PING),
        "post": copy.deepcopy(POST),
    }


def load_problems(text: str) -> list[str]:
    try:
        parse_config(text, SOURCE, env={})
    except ConfigError as exc:
        return exc.problems
    return []


def test_the_base_http_buyer_loads() -> None:
    assert load_problems(config_text([http_buyer()])) == []


def test_a_date_transform_on_a_date_field_loads() -> None:
    document = yaml.safe_load(config_text([]))
    document["verticals"]["auto_insurance"]["fields"]["birth_date"] = {"type": "date"}
    buyer = http_buyer()
    buyer["ping"]["fields"]["DOB"] = "birth_date"
    buyer["ping"]["transforms"] = {"DOB": "date:%m/%d/%Y"}
    document["buyers"] = [buyer]
    assert load_problems(yaml.safe_dump(document, sort_keys=False)) == []


Change = Callable[[dict[str, Any]], None]


def _set(role: str, key: str, value: Any) -> Change:
    def change(buyer: dict[str, Any]) -> None:
        buyer[role][key] = value

    return change


def _add(role: str, key: str, name: str, value: Any) -> Change:
    def change(buyer: dict[str, Any]) -> None:
        buyer[role].setdefault(key, {})[name] = value

    return change


def _drop(role: str, key: str) -> Change:
    def change(buyer: dict[str, Any]) -> None:
        del buyer[role][key]

    return change


# (what is changed, the key path the problem must name, what it must say)
TEMPLATE_MISTAKES: dict[str, tuple[Change, str, str]] = {
    "unknown_lead_field": (
        _add("ping", "fields", "Zip", "zipcode"), "ping.fields.Zip", "unknown field 'zipcode'"),
    "unknown_template_key": (_set("ping", "bids", "$.x"), "ping.bids", "Extra inputs"),
    "pii_field_in_ping": (_add("ping", "fields", "Phone", "phone"), "ping.fields.Phone", "PII"),
    "email_in_ping": (_add("ping", "fields", "Mail", "email"), "ping.fields.Mail", "PII"),
    "malformed_jsonpath": (_set("ping", "bid", "$.result["), "ping.bid", "bad JSONPath"),
    "malformed_jsonpath_filter": (
        _set("ping", "bid_id", "$.bids[?(@.x"), "ping.bid_id", "bad JSONPath"),
    "malformed_xpath": (
        _set("post", "accepted", "/Response/[Status"), "post.accepted", "bad XPath"),
    "malformed_xpath_in_lead_id": (
        _set("post", "buyer_lead_id", "/Response/LeadId]"), "post.buyer_lead_id", "bad XPath"),
    "malformed_regex": (_set("ping", "bid", "re:Price>(.+"), "ping.bid", "regular expression"),
    "regex_without_a_group": (
        _set("ping", "bid", "re:Price>[0-9.]+<"), "ping.bid", "exactly one group, this has 0"),
    "regex_with_two_groups": (
        _set("ping", "bid", "re:(Price)>([0-9.]+)<"), "ping.bid", "exactly one group, this has 2"),
    "unknown_transform": (
        _add("post", "transforms", "Phone", "digits11"), "post.transforms.Phone",
        "unknown transform 'digits11'"),
    "date_transform_on_a_non_date_field": (
        _add("ping", "transforms", "ZipCode", "date:%m/%d/%Y"), "ping.transforms.ZipCode",
        "date fields"),
    "transform_for_a_name_not_in_fields": (
        _add("post", "transforms", "Fax", "digits10"), "post.transforms.Fax", "not a name"),
    "post_without_accepted": (_drop("post", "accepted"), "post.accepted", "Field required"),
    "post_without_accepted_values": (
        _drop("post", "accepted_values"), "post.accepted_values", "Field required"),
    "post_with_empty_accepted_values": (
        _set("post", "accepted_values", []), "post.accepted_values", "at least 1"),
    "unknown_url_placeholder": (
        _set("post", "url", "https://crm.buyer.example/leads/{lead_id}/post"), "post.url",
        "unknown placeholder {lead_id}"),
    "post_only_placeholder_in_ping_url": (
        _set("ping", "url", "https://crm.buyer.example/ping/{bid_id}"), "ping.url",
        "unknown placeholder {bid_id}"),
    "unbalanced_url_brace": (
        _set("post", "url", "https://crm.buyer.example/leads/{bid_id/post"), "post.url",
        "unbalanced"),
    "bad_xml_element_name": (
        _add("post", "fields", "1Zip", "zip"), "post.fields.1Zip", "not an XML element name"),
    "xml_element_name_with_a_space": (
        _add("post", "fields", "Zip Code", "zip"), "post.fields.Zip Code",
        "not an XML element name"),
    "xml_element_name_with_markup": (
        _add("post", "fields", "a><b", "zip"), "post.fields.a><b", "not an XML element name"),
    "bad_xml_root": (_set("post", "root", "Le ad"), "post.root", "not an XML element name"),
    "hmac_auth_without_secret": (
        _set("ping", "auth", {"type": "hmac"}), "ping.auth", "secret"),
    "header_value_with_crlf": (
        _add("ping", "headers", "X-Source", "lx\r\nX-Injected: 1"), "ping.headers.X-Source",
        "one line"),
    "auth_header_value_with_crlf": (
        _set("post", "auth", {"type": "header", "name": "X-Api-Key",
                              "value": "k\r\nX-Injected: 1"}),
        "post.auth.value", "one line"),
    "bearer_token_with_a_line_feed": (
        _set("ping", "auth", {"type": "bearer", "token": "t\nX-Injected: 1"}), "ping.auth.token",
        "one line"),
    "bad_header_name": (
        _add("ping", "headers", "X Source: 1\r\nX-Injected", "v"), "ping.headers", "header name"),
    "framing_header_in_template": (
        _add("post", "headers", "Content-Length", "0"), "post.headers.Content-Length",
        "set by the exchange"),
    "basic_auth_without_password": (
        _set("post", "auth", {"type": "basic", "username": "u"}), "post.auth", "password"),
    "root_on_a_json_template": (_set("ping", "root", "Lead"), "ping", "root is for format: xml"),
    "get_with_xml_format": (
        lambda buyer: buyer["post"].update(method="GET"), "post", "query string"),
    "nested_name_also_a_value": (
        lambda buyer: buyer["post"]["fields"].update({"Contact": "first_name",
                                                      "Contact.Phone": "phone"}),
        "post.fields.Contact.Phone", "also a value"),
    "value_map_for_a_name_not_in_fields": (
        _add("ping", "values", "Region", {"CA": "West"}), "ping.values.Region", "not a name"),
    "constant_also_a_field": (
        _add("ping", "constants", "ZipCode", "00000"), "ping.constants.ZipCode", "also mapped"),
}  # fmt: skip


@pytest.mark.parametrize("mistake", sorted(TEMPLATE_MISTAKES))
def test_a_template_mistake_fails_the_load_naming_its_key_path(mistake: str) -> None:
    change, key_path, message = TEMPLATE_MISTAKES[mistake]
    buyer = http_buyer()
    change(buyer)
    problems = load_problems(config_text([http_buyer("first-buyer"), buyer]))
    where = f"{SOURCE}: buyers[1].{key_path}"
    assert any(p.startswith(where) and message in p for p in problems), problems
    assert not any("buyers[0]" in p for p in problems), "the good buyer has no problem"


def test_ping_template_on_a_json_adapter_buyer_fails_the_load() -> None:
    buyer = http_buyer()
    del buyer["adapter"]
    problems = load_problems(config_text([buyer]))
    assert any(
        p.startswith(f"{SOURCE}: buyers[0]") and "ping templates are for adapter: http" in p
        for p in problems
    ), problems


def test_post_template_without_a_ping_template_is_a_post_only_http_buyer() -> None:
    buyer = http_buyer()
    del buyer["ping"]
    buyer["price"] = 12.5
    assert load_problems(config_text([buyer])) == []


def test_mistakes_in_two_buyers_are_reported_together() -> None:
    first, second = http_buyer("first-buyer"), http_buyer("second-buyer")
    first["ping"]["fields"]["Zip"] = "zipcode"
    second["post"]["transforms"]["Phone"] = "digits11"
    problems = load_problems(config_text([first, second]))
    assert any(p.startswith(f"{SOURCE}: buyers[0].ping.fields.Zip") for p in problems), problems
    assert any(p.startswith(f"{SOURCE}: buyers[1].post.transforms.Phone") for p in problems)


@pytest.mark.parametrize("value", ["lx-\u00e9\u20ac", "lx\x0bsource", "lx\x7f", "lx\tsource\x1b"])
def test_a_header_value_that_cannot_go_on_the_wire_fails_the_load(value: str) -> None:
    """A header value the transport must refuse (not Latin-1) or that HTTP forbids (control
    characters other than tab, RFC 9110 section 5.5) would fail or garble every request to
    that buyer: it is a config error, found at load, not at the first auction."""
    buyer = http_buyer()
    buyer["ping"]["headers"] = {"X-Source": value}
    problems = load_problems(config_text([buyer]))
    assert any(p.startswith(f"{SOURCE}: buyers[0].ping.headers.X-Source") for p in problems), (
        problems
    )
