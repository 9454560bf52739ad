"""What simulated buyers that do not speak our JSON sound like (SPEC section 8).

A dialect stands for one family of real buyer APIs. A ``Speaker`` is one simulated
buyer's dialect bound to its field names and credentials: it reads a request in that
format into our field names (refusing it with a status and a reason when it cannot), and
shapes the simulator's decision (bid or not, accept or not) into that format's answer.
What to answer is decided by the simulator, the same way for every dialect; a speaker
only translates. Each speaker can also write the ``adapter: http`` templates with which
the exchange speaks to it, so the demo and the tests configure buyers that match.

Dialects, with their default field names ({their name: our field}):

``form``
    A boberdoo-like lead system: form-encoded fields (body, or query string on GET),
    ``Key`` as the API key, answers in XML: ``<response><status>Matched</status>
    <lead_id>..</lead_id><price>6.66</price></response>``, ``Unmatched`` for no bid or a
    rejected post. A post names the ping's ``lead_id`` in ``Lead_ID``.
``xml``
    A CRM taking ``<Lead><Contact><Zip>..</Zip></Contact>..</Lead>`` with HTTP basic auth,
    answering ``<Response><Status>Accepted|Rejected</Status><Price>..</Price>
    <LeadId>..</LeadId><Redirect>..</Redirect></Response>``.
``custom_json``
    A px.com-like JSON API with nested names (``{"ContactData": {"ZipCode": ..}}``), an
    ``X-Api-Key`` header, ``{"TransactionId", "Success", "Payout"}`` for pings and
    ``{"Success", "Sold", "RedirectUrl"}`` for posts.

The simulator's own XML parsing uses the standard library: it is a test tool that only
ever reads what the exchange sends it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import orjson
from aiohttp import web

from exchange.core.money import dollars_json, dollars_text

Phase = Literal["ping", "post"]

NATIVE = "json"  # our own JSON (SPEC section 5): the simulator answers it itself
SIMULATED_ERROR = "simulated error"
MAX_REASON_CHARS = 200
# A post may carry these besides lead fields; the exchange fills them in (SPEC section 8).
POST_SPECIALS = ("bid_id", "ping_id", "price")
# What a request must carry (when the buyer's field names map it) to be read at all.
_REQUIRED: Mapping[Phase, tuple[str, ...]] = {
    "ping": ("zip", "state"),
    "post": ("zip", "state", "bid_id"),
}
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


class Refused(Exception):
    """A request the simulated buyer will not read: answered with ``status`` and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason[:MAX_REASON_CHARS]


@dataclass(frozen=True, slots=True)
class PingAnswer:
    """The simulator's decision on a ping. No ``bid_cents``: no bid (``reason`` says why)."""

    bid_cents: int | None = None
    bid_id: str | None = None
    reason: str | None = None
    error: bool = False


@dataclass(frozen=True, slots=True)
class PostAnswer:
    """The simulator's decision on a post."""

    accepted: bool = False
    lead_id: str | None = None
    reason: str | None = None
    error: bool = False


def _mime(headers: Mapping[str, str]) -> str:
    return headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


def _same(given: str | bytes, expected: str | bytes) -> bool:
    given_bytes = given.encode() if isinstance(given, str) else given
    expected_bytes = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(given_bytes, expected_bytes)


def _xml(root: str, items: Collection[tuple[str, str | None]]) -> bytes:
    inner = "".join(f"<{tag}>{escape(text)}</{tag}>" for tag, text in items if text is not None)
    return f'<?xml version="1.0" encoding="UTF-8"?><{root}>{inner}</{root}>'.encode()


class Speaker:
    """One simulated buyer's dialect: how it reads requests and words its answers."""

    name: ClassVar[str]
    default_fields: ClassVar[Mapping[str, str]]
    default_api_key_name: ClassVar[str] = ""
    request_types: ClassVar[tuple[str, ...]]  # accepted Content-Types of a request body
    methods: ClassVar[frozenset[str]] = frozenset({"POST"})
    answer_type: ClassVar[str]
    template_format: ClassVar[str]
    # Per our field, how its value is transformed on the way (template ``transforms``).
    transforms: ClassVar[Mapping[str, str]] = {}
    # Where the exchange finds what it needs in the answers (template answer paths).
    ping_paths: ClassVar[Mapping[str, Any]]
    post_paths: ClassVar[Mapping[str, Any]]

    def __init__(
        self,
        fields: Mapping[str, str] | None = None,
        api_key: str = "",
        api_key_name: str = "",
        xml_root: str = "Lead",
    ) -> None:
        self.fields: Mapping[str, str] = dict(fields or self.default_fields)
        self.api_key = api_key
        self.api_key_name = api_key_name or self.default_api_key_name
        self.xml_root = xml_root
        if not all(their and our for their, our in self.fields.items()):
            raise ValueError("fields: a name is empty")
        self._check_settings()
        self._paths = {their: self._path(their) for their in self.fields}
        names = {our: their for their, our in self.fields.items()}
        self.reference_field: str | None = names.get("bid_id")
        self._required = {
            phase: tuple(names[our] for our in required if our in names)
            for phase, required in _REQUIRED.items()
        }

    def _check_settings(self) -> None:
        """Refuse settings this dialect cannot use (ValueError)."""

    def _path(self, their: str) -> Any:
        """Where a field name is found in a request; ValueError if it cannot be."""
        return their

    # -- reading requests

    def read(
        self, phase: Phase, headers: Mapping[str, str], query: Mapping[str, str], raw: bytes
    ) -> dict[str, str]:
        """The request's values under our field names; ``Refused`` if it cannot be read,
        lacks a required field or does not carry the buyer's credentials."""
        self._check_credentials(headers)
        mime = _mime(headers)
        if raw and mime not in self.request_types:
            wanted = " or ".join(self.request_types)
            raise Refused(415, f"Content-Type must be {wanted}, not {mime!r}")
        values = self._decode(raw, query)
        self._check_body_credentials(values)
        missing = [their for their in self._required[phase] if their not in values]
        if missing:
            raise Refused(400, f"missing {', '.join(missing)}")
        return {our: values[their] for their, our in self.fields.items() if their in values}

    def _check_credentials(self, headers: Mapping[str, str]) -> None:
        """Credentials carried in headers."""

    def _check_body_credentials(self, values: Mapping[str, str]) -> None:
        """Credentials carried among the request's fields."""

    def _decode(self, raw: bytes, query: Mapping[str, str]) -> dict[str, str]:
        """Their names to non-empty text, for the names this buyer knows at least."""
        raise NotImplementedError

    # -- shaping answers

    def ping_response(self, answer: PingAnswer) -> web.Response:
        if answer.error:
            return self.refusal(500, SIMULATED_ERROR)
        return self._answer(200, self._ping_body(answer))

    def post_response(self, answer: PostAnswer) -> web.Response:
        if answer.error:
            return self.refusal(500, SIMULATED_ERROR)
        return self._answer(200, self._post_body(answer))

    def refusal(self, status: int, reason: str) -> web.Response:
        return self._answer(status, self._refusal_body(reason))

    def _answer(self, status: int, body: bytes) -> web.Response:
        return web.Response(status=status, body=body, headers={"Content-Type": self.answer_type})

    def _ping_body(self, answer: PingAnswer) -> bytes:
        raise NotImplementedError

    def _post_body(self, answer: PostAnswer) -> bytes:
        raise NotImplementedError

    def _refusal_body(self, reason: str) -> bytes:
        raise NotImplementedError

    # -- the exchange's side

    def exchange_buyer(
        self,
        ping_url: str,
        post_url: str,
        lead_fields: Collection[str],
        pii: Collection[str] = (),
        secret: str = "",
    ) -> dict[str, Any]:
        """An ``adapter: http`` buyer entry of the exchange's config (SPEC section 8) that
        speaks to this one: its ``ping:`` and ``post:`` templates. ``lead_fields`` are the
        vertical's fields (only those are mapped); ``pii`` ones stay out of the ping. With
        a ``secret`` (the buyer also checks our signature) the templates sign with it
        instead of sending an API key."""
        if secret and self.api_key:
            raise ValueError("a template has one auth: an API key or hmac signing, not both")
        auth = {"type": "hmac"} if secret else self._auth_template()
        ping_fields = {t: o for t, o in self.fields.items() if o in lead_fields and o not in pii}
        post_fields = {
            t: o for t, o in self.fields.items() if o in lead_fields or o in POST_SPECIALS
        }
        templates: dict[str, Any] = {"adapter": "http", **({"secret": secret} if secret else {})}
        for phase, url, fields, answer in (
            ("ping", ping_url, ping_fields, self.ping_paths),
            ("post", post_url, post_fields, self.post_paths),
        ):
            template: dict[str, Any] = {"url": url, "format": self.template_format}
            if self.template_format == "xml":
                template["root"] = self.xml_root
            template["fields"] = fields
            transforms = {t: self.transforms[o] for t, o in fields.items() if o in self.transforms}
            if transforms:
                template["transforms"] = transforms
            template["auth"] = dict(auth)
            template.update(answer)
            templates[phase] = template
        return templates

    def _auth_template(self) -> dict[str, str]:
        raise NotImplementedError


class FormSpeaker(Speaker):
    """A boberdoo-like lead system: form fields in, XML out."""

    name = "form"
    default_fields: ClassVar[Mapping[str, str]] = {
        "ZipCode": "zip", "State": "state", "Age": "age", "Credit_Rating": "credit_rating",
        "First_Name": "first_name", "Last_Name": "last_name", "Email": "email",
        "Primary_Phone": "phone", "Lead_ID": "bid_id", "Price": "price",
    }  # fmt: skip
    default_api_key_name = "Key"
    request_types = ("application/x-www-form-urlencoded",)
    methods = frozenset({"POST", "GET"})
    answer_type = "application/xml; charset=utf-8"
    template_format = "form"
    transforms: ClassVar[Mapping[str, str]] = {"phone": "digits10"}
    ping_paths: ClassVar[Mapping[str, Any]] = {
        "bid": "/response/price",
        "bid_id": "/response/lead_id",
        "reason": "/response/reason",
    }
    post_paths: ClassVar[Mapping[str, Any]] = {
        "accepted": "/response/status",
        "accepted_values": ["Matched"],
        "reason": "/response/reason",
        "buyer_lead_id": "/response/lead_id",
    }

    def _decode(self, raw: bytes, query: Mapping[str, str]) -> dict[str, str]:
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise Refused(400, "body is not UTF-8") from None
        try:
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, max_num_fields=500)
        except ValueError as problem:
            raise Refused(400, f"body is not form-encoded: {problem}") from None
        values = {name: value.strip() for name, value in (*query.items(), *pairs)}
        return {name: value for name, value in values.items() if value}

    def _check_body_credentials(self, values: Mapping[str, str]) -> None:
        # A query-string key (auth type query) counts as well as a form field.
        if self.api_key and not _same(values.get(self.api_key_name, ""), self.api_key):
            raise Refused(401, f"bad or missing {self.api_key_name}")

    def _ping_body(self, answer: PingAnswer) -> bytes:
        if answer.bid_cents is None:
            return _xml("response", [("status", "Unmatched"), ("reason", answer.reason)])
        return _xml(
            "response",
            [
                ("status", "Matched"),
                ("lead_id", answer.bid_id),
                ("price", dollars_text(answer.bid_cents)),
            ],
        )

    def _post_body(self, answer: PostAnswer) -> bytes:
        if not answer.accepted:
            return _xml("response", [("status", "Unmatched"), ("reason", answer.reason)])
        return _xml("response", [("status", "Matched"), ("lead_id", answer.lead_id)])

    def _refusal_body(self, reason: str) -> bytes:
        return _xml("response", [("status", "Error"), ("error", reason)])

    def _auth_template(self) -> dict[str, str]:
        if not self.api_key:
            return {"type": "none"}
        return {"type": "query", "name": self.api_key_name, "value": self.api_key}


class XmlSpeaker(Speaker):
    """A CRM taking an XML lead with HTTP basic auth (``api_key`` is ``user:password``)."""

    name = "xml"
    default_fields: ClassVar[Mapping[str, str]] = {
        "Contact.FirstName": "first_name", "Contact.LastName": "last_name",
        "Contact.Email": "email", "Contact.Phone": "phone", "Contact.Zip": "zip",
        "Contact.State": "state", "Profile.Age": "age", "Profile.Credit": "credit_rating",
        "LeadId": "bid_id", "Price": "price",
    }  # fmt: skip
    request_types = ("application/xml", "text/xml")
    answer_type = "application/xml; charset=utf-8"
    template_format = "xml"
    transforms: ClassVar[Mapping[str, str]] = {"phone": "dashed"}
    ping_paths: ClassVar[Mapping[str, Any]] = {
        "bid": "/Response/Price",
        "bid_id": "/Response/LeadId",
        "reason": "/Response/Reason",
    }
    post_paths: ClassVar[Mapping[str, Any]] = {
        "accepted": "/Response/Status",
        "accepted_values": ["Accepted"],
        "reason": "/Response/Reason",
        "buyer_lead_id": "/Response/LeadId",
        "redirect_url": "/Response/Redirect",
    }
    redirect_base = "https://crm.example/welcome/"

    def _check_settings(self) -> None:
        if not _XML_NAME.match(self.xml_root):
            raise ValueError(f"xml_root: {self.xml_root!r} is not a plain XML element name")
        if self.api_key and ":" not in self.api_key:
            raise ValueError("api_key: an xml buyer takes HTTP basic auth, as user:password")
        if self.api_key_name:
            raise ValueError("api_key_name: an xml buyer takes HTTP basic auth, not a named key")

    def _path(self, their: str) -> str:
        if not all(_XML_NAME.match(part) for part in their.split(".")):
            raise ValueError(f"fields: {their!r} is not a dotted path of XML element names")
        return their.replace(".", "/")

    def _check_credentials(self, headers: Mapping[str, str]) -> None:
        if not self.api_key:
            return
        given = headers.get("Authorization", "")
        if not given.startswith("Basic "):
            raise Refused(401, "HTTP basic credentials needed")
        try:
            decoded = base64.b64decode(given[len("Basic ") :].strip(), validate=True)
        except (binascii.Error, ValueError):
            raise Refused(401, "malformed HTTP basic credentials") from None
        if not _same(decoded, self.api_key):
            raise Refused(401, "bad credentials")

    def _decode(self, raw: bytes, query: Mapping[str, str]) -> dict[str, str]:
        try:
            root = ElementTree.fromstring(raw)
        except (ElementTree.ParseError, ValueError, LookupError) as problem:
            raise Refused(400, f"body is not XML: {problem}") from None
        if root.tag != self.xml_root:
            raise Refused(400, f"root element must be <{self.xml_root}>, not <{root.tag}>")
        values: dict[str, str] = {}
        for their, path in self._paths.items():
            element = root.find(path)
            if element is not None and len(element):
                raise Refused(400, f"{their} must be text, not elements")
            text = (element.text or "").strip() if element is not None else ""
            if text:
                values[their] = text
        return values

    def refusal(self, status: int, reason: str) -> web.Response:
        response = super().refusal(status, reason)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Basic realm="crm"'
        return response

    def _ping_body(self, answer: PingAnswer) -> bytes:
        if answer.bid_cents is None:
            return _xml("Response", [("Status", "Rejected"), ("Reason", answer.reason)])
        return _xml(
            "Response",
            [
                ("Status", "Accepted"),
                ("Price", dollars_text(answer.bid_cents)),
                ("LeadId", answer.bid_id),
            ],
        )

    def _post_body(self, answer: PostAnswer) -> bytes:
        if not answer.accepted:
            return _xml("Response", [("Status", "Rejected"), ("Reason", answer.reason)])
        return _xml(
            "Response",
            [
                ("Status", "Accepted"),
                ("LeadId", answer.lead_id),
                ("Redirect", f"{self.redirect_base}{answer.lead_id}"),
            ],
        )

    def _refusal_body(self, reason: str) -> bytes:
        return _xml("Response", [("Status", "Error"), ("Reason", reason)])

    def _auth_template(self) -> dict[str, str]:
        if not self.api_key:
            return {"type": "none"}
        username, password = self.api_key.split(":", 1)
        return {"type": "basic", "username": username, "password": password}


class CustomJsonSpeaker(Speaker):
    """A px.com-like JSON API: nested names in, its own answer shape out, a header key."""

    name = "custom_json"
    default_fields: ClassVar[Mapping[str, str]] = {
        "ContactData.FirstName": "first_name", "ContactData.LastName": "last_name",
        "ContactData.EmailAddress": "email", "ContactData.PhoneNumber": "phone",
        "ContactData.ZipCode": "zip", "ContactData.State": "state", "Person.Age": "age",
        "Person.CreditRating": "credit_rating", "TransactionId": "bid_id", "Payout": "price",
    }  # fmt: skip
    default_api_key_name = "X-Api-Key"
    request_types = ("application/json",)
    answer_type = "application/json"
    template_format = "json"
    transforms: ClassVar[Mapping[str, str]] = {"phone": "digits10"}
    ping_paths: ClassVar[Mapping[str, Any]] = {
        "bid": "$.Payout",
        "bid_id": "$.TransactionId",
        "reason": "$.Message",
    }
    post_paths: ClassVar[Mapping[str, Any]] = {
        "accepted": "$.Sold",
        "accepted_values": ["true"],
        "reason": "$.Message",
        "buyer_lead_id": "$.LeadId",
        "redirect_url": "$.RedirectUrl",
    }
    redirect_base = "https://offers.example/claim/"

    def _path(self, their: str) -> tuple[str, ...]:
        if not all(their.split(".")):
            raise ValueError(f"fields: {their!r} has an empty part")
        return tuple(their.split("."))

    def _check_credentials(self, headers: Mapping[str, str]) -> None:
        if self.api_key and not _same(headers.get(self.api_key_name, ""), self.api_key):
            raise Refused(401, f"bad or missing {self.api_key_name} header")

    def _decode(self, raw: bytes, query: Mapping[str, str]) -> dict[str, str]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Refused(400, "body is not JSON") from None
        if not isinstance(body, dict):
            raise Refused(400, "body must be a JSON object")
        values: dict[str, str] = {}
        for their, path in self._paths.items():
            node: Any = body
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict | list):
                raise Refused(400, f"{their} must be a value, not {type(node).__name__}")
            if isinstance(node, bool):
                text = "true" if node else "false"
            else:
                text = "" if node is None else str(node).strip()
            if text:
                values[their] = text
        return values

    def _ping_body(self, answer: PingAnswer) -> bytes:
        if answer.bid_cents is None:
            return orjson.dumps({"Success": False, "Payout": 0, "Message": answer.reason})
        payout = dollars_json(answer.bid_cents)
        return orjson.dumps({"TransactionId": answer.bid_id, "Success": True, "Payout": payout})

    def _post_body(self, answer: PostAnswer) -> bytes:
        if not answer.accepted:
            return orjson.dumps({"Success": True, "Sold": False, "Message": answer.reason})
        return orjson.dumps(
            {
                "Success": True,
                "Sold": True,
                "LeadId": answer.lead_id,
                "RedirectUrl": f"{self.redirect_base}{answer.lead_id}",
            }
        )

    def _refusal_body(self, reason: str) -> bytes:
        return orjson.dumps({"Success": False, "Message": reason})

    def _auth_template(self) -> dict[str, str]:
        if not self.api_key:
            return {"type": "none"}
        return {"type": "header", "name": self.api_key_name, "value": self.api_key}


SPEAKERS: Mapping[str, type[Speaker]] = {
    speaker.name: speaker for speaker in (FormSpeaker, XmlSpeaker, CustomJsonSpeaker)
}
FORMATS = (NATIVE, *SPEAKERS)


@dataclass(frozen=True)
class Dialect:
    """A simulated buyer's wire format and its settings (checked when made).

    ``api_key``: the buyer's credential, empty for none (form: a form or query-string
    field and custom_json: a header, both named ``api_key_name``; xml: HTTP basic,
    ``user:password``). ``fields``: {their name: our field}, replacing the format's
    default names; a dotted name nests (JSON objects, XML elements); our ``bid_id`` is
    the ping's id a post must name back. Our own ``json`` takes none of these.
    """

    format: str = NATIVE
    api_key: str = field(default="", repr=False)
    api_key_name: str = ""
    fields: Mapping[str, str] = field(default_factory=dict, hash=False)
    xml_root: str = "Lead"

    def __post_init__(self) -> None:
        self.speaker()

    def speaker(self) -> Speaker | None:
        """A speaker for this dialect (None for our own JSON); ValueError if it is bad."""
        if self.format == NATIVE:
            if self.fields or self.api_key or self.api_key_name:
                raise ValueError("fields, api_key and api_key_name are for the other formats")
            return None
        try:
            speaker = SPEAKERS[self.format]
        except KeyError:
            known = ", ".join(FORMATS)
            raise ValueError(
                f"dialect format must be one of {known}, not {self.format!r}"
            ) from None
        return speaker(self.fields, self.api_key, self.api_key_name, self.xml_root)

    @classmethod
    def from_config(cls, value: object) -> Dialect:
        """From a config value: a format's name, or a mapping of this class's fields."""
        if isinstance(value, str):
            return cls(value)
        if not isinstance(value, Mapping):
            raise ValueError("dialect must be a format name or a mapping")
        settings = {str(key): item for key, item in value.items()}
        unknown = sorted(set(settings) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"dialect: unknown key {unknown[0]!r}")
        fields = settings.pop("fields", None) or {}
        if not isinstance(fields, Mapping):
            raise ValueError("dialect fields must map their names to ours")
        text = {key: str(item) for key, item in settings.items()}
        return cls(**text, fields={str(their): str(our) for their, our in fields.items()})


OUR_JSON = Dialect()
