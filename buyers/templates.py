"""A configured buyer request (SPEC section 8), compiled once at load into slots and an
encoder, so that a ping costs a walk over a short list and one encoding.

Each slot is one name the buyer wants: a constant, or one of our values (a lead field
or the exchange's own ``ping_id``, ``bid_id``, ``price``, ...) with its value map and
transform. Constants come first, then fields, each in config order. An absent lead value
is left out.

Values never change a request's structure: JSON is written by orjson, form bodies and
query strings are percent-encoded, XML text is escaped (and characters XML cannot carry
become U+FFFD), URL placeholders are percent-encoded path segments, and no lead value
ever goes into a header.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import quote, quote_plus

import orjson

from exchange.core.fields import FieldSpec
from exchange.core.http_templates import TemplateValue
from exchange.core.money import cents_to_dollars

Transform = Callable[[Any], Any]
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Characters XML 1.0 cannot carry at all (it has no escape for them).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Text that percent-encoding leaves as it is (most lead values): checked in one call.
_FORM_SAFE = re.compile(r"[A-Za-z0-9_.~-]*\Z").match
_PHONE_TYPES = frozenset({"phone", "string"})
_TEXT_TYPES = frozenset({"string", "enum", "email", "phone", "zip", "state", "date"})

# ``score``: the lead score (SPEC section 10), absent when the vertical does not score.
PING_SPECIALS = ("ping_id", "vertical", "floor", "tmax_ms", "score")
POST_SPECIALS = ("ping_id", "bid_id", "price", "vertical")


class TemplateError(ValueError):
    """A template that cannot be compiled; ``path`` is the key inside the buyer."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def _digits10(value: Any) -> str:
    digits = "".join(c for c in str(value) if c.isdigit())
    return digits[-10:]


def _e164(value: Any) -> str:
    text = str(value)
    digits = "".join(c for c in text if c.isdigit())
    if text.startswith("+"):
        return "+" + digits
    return "+1" + digits if len(digits) == 10 else "+" + digits


def _dashed(value: Any) -> str:
    d = _digits10(value)
    return f"{d[:3]}-{d[3:6]}-{d[6:]}" if len(d) == 10 else d


def _paren(value: Any) -> str:
    d = _digits10(value)
    return f"({d[:3]}) {d[3:6]}-{d[6:]}" if len(d) == 10 else d


def _date_format(fmt: str) -> Transform:
    def transform(value: Any) -> str:
        return date.fromisoformat(str(value)).strftime(fmt)

    return transform


# name: (transform, the field types it applies to)
_TRANSFORMS: Mapping[str, tuple[Transform, frozenset[str]]] = {
    "e164": (_e164, _PHONE_TYPES),
    "digits10": (_digits10, _PHONE_TYPES),
    "dashed": (_dashed, _PHONE_TYPES),
    "paren": (_paren, _PHONE_TYPES),
    "upper": (lambda v: str(v).upper(), _TEXT_TYPES),
    "lower": (lambda v: str(v).lower(), _TEXT_TYPES),
}
TRANSFORM_NAMES = (*_TRANSFORMS, "date:FMT")


def compile_transform(spec: str, field_type: str | None) -> Transform:
    """A transform by its config name; ValueError says why it cannot apply."""
    if spec.startswith("date:"):
        fmt = spec[5:]
        if "%" not in fmt:
            raise ValueError(f"date format {fmt!r} has no % directive (e.g. date:%m/%d/%Y)")
        try:
            date(2024, 12, 31).strftime(fmt)
        except ValueError as exc:
            raise ValueError(f"bad date format {fmt!r}: {exc}") from None
        if field_type is not None and field_type != "date":
            raise ValueError(f"date: applies to date fields, this field is {field_type}")
        return _date_format(fmt)
    known = _TRANSFORMS.get(spec)
    if known is None:
        raise ValueError(f"unknown transform {spec!r} (known: {', '.join(TRANSFORM_NAMES)})")
    transform, types = known
    if field_type is not None and field_type not in types:
        raise ValueError(f"{spec} does not apply to a {field_type} field")
    return transform


@dataclass(frozen=True, slots=True)
class Slot:
    """One name in a buyer's request and where its value comes from."""

    name: str
    steps: tuple[str, ...]  # the name split for nesting (json, xml)
    source: str | None  # our field or special; None for a constant
    special: bool
    constant: Any = None
    value_map: Mapping[str, Any] | None = None
    transform: Transform | None = None
    quoted: str = ""  # the name percent-encoded, for form bodies and query strings

    def __post_init__(self) -> None:
        object.__setattr__(self, "quoted", quote_plus(self.name))

    def value(self, lead: Mapping[str, Any], specials: Mapping[str, Any]) -> Any:
        if self.source is None:
            return self.constant
        value = specials.get(self.source) if self.special else lead.get(self.source)
        if value is None:
            return None
        if self.value_map is not None:
            mapped = self.value_map.get(_text(value))
            if mapped is not None:
                return mapped
        if self.transform is not None:
            return self.transform(value)
        return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def split_name(name: str) -> tuple[str, ...]:
    """``Contact.Zip`` is two steps; ``primary\\.birth_date`` is one (an escaped dot)."""
    parts = re.split(r"(?<!\\)\.", name)
    return tuple(part.replace("\\.", ".") for part in parts)


def compile_slots(
    *,
    role: str,
    fields: Mapping[str, str],
    constants: Mapping[str, TemplateValue],
    values: Mapping[str, Mapping[str, TemplateValue]],
    transforms: Mapping[str, str],
    lead_fields: Mapping[str, FieldSpec] | None,
    specials: tuple[str, ...],
) -> tuple[Slot, ...]:
    """The slots of one template, every name and source checked; TemplateError names
    the key path (``ping.fields.Zip``)."""
    slots: list[Slot] = []
    for name, constant in constants.items():
        if name in fields:
            raise TemplateError(f"{role}.constants.{name}", "also mapped in fields")
        slots.append(Slot(name, split_name(name), None, False, constant=constant))
    for name, source in fields.items():
        where = f"{role}.fields.{name}"
        special = source in specials
        spec: FieldSpec | None = None
        if not special and lead_fields is not None:
            spec = lead_fields.get(source)
            if spec is None:
                known = ", ".join([*sorted(lead_fields), *specials])
                raise TemplateError(where, f"unknown field {source!r} (known: {known})")
            if role == "ping" and spec.pii:
                raise TemplateError(where, f"{source} is PII: pings never carry it")
        transform = None
        if name in transforms:
            try:
                transform = compile_transform(transforms[name], spec.type if spec else None)
            except ValueError as exc:
                raise TemplateError(f"{role}.transforms.{name}", str(exc)) from None
        slots.append(
            Slot(
                name,
                split_name(name),
                source,
                special,
                value_map=values.get(name),
                transform=transform,
            )
        )
    for name in transforms:
        if name not in fields:
            raise TemplateError(f"{role}.transforms.{name}", "not a name in fields")
    for name in values:
        if name not in fields:
            raise TemplateError(f"{role}.values.{name}", "not a name in fields")
    return tuple(slots)


# --- encoders --------------------------------------------------------------------------

Encoder = Callable[[tuple[Slot, ...], Mapping[str, Any], Mapping[str, Any]], bytes]


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    return value


def check_nesting(slots: tuple[Slot, ...], where: str) -> None:
    """Nested names must form a tree: ``A`` and ``A.B`` cannot both be given."""
    leaves: set[tuple[str, ...]] = set()
    for slot in slots:
        if any(not step for step in slot.steps):
            raise TemplateError(f"{where}.{slot.name}", "empty name step")
        if slot.steps in leaves:
            raise TemplateError(f"{where}.{slot.name}", "name given twice")
        leaves.add(slot.steps)
    for slot in slots:
        for depth in range(1, len(slot.steps)):
            if slot.steps[:depth] in leaves:
                prefix = ".".join(slot.steps[:depth])
                raise TemplateError(f"{where}.{slot.name}", f"{prefix} is also a value")


def _nested(
    slots: tuple[Slot, ...],
    lead: Mapping[str, Any],
    specials: Mapping[str, Any],
    convert: Callable[[Any], Any],
) -> dict[str, Any]:
    """The slots' values as a tree: a dotted name's steps nest (json objects, xml
    elements); absent values are left out."""
    tree: dict[str, Any] = {}
    for slot in slots:
        value = slot.value(lead, specials)
        if value is None:
            continue
        node = tree
        for step in slot.steps[:-1]:
            node = node.setdefault(step, {})
        node[slot.steps[-1]] = convert(value)
    return tree


def encode_json(
    slots: tuple[Slot, ...], lead: Mapping[str, Any], specials: Mapping[str, Any]
) -> bytes:
    return orjson.dumps(_nested(slots, lead, specials, _json_value))


def form_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if value != int(value) else str(int(value))
    return str(value)


def encode_pairs(
    slots: tuple[Slot, ...], lead: Mapping[str, Any], specials: Mapping[str, Any]
) -> str:
    """``a=1&b=x%26y``: the form body and query string encoding (spaces as +)."""
    pairs = []
    for slot in slots:
        value = slot.value(lead, specials)
        if value is None:
            continue
        text = value if type(value) is str else form_text(value)
        if _FORM_SAFE(text) is None:
            text = quote_plus(text)
        pairs.append(f"{slot.quoted}={text}")
    return "&".join(pairs)


def encode_form(
    slots: tuple[Slot, ...], lead: Mapping[str, Any], specials: Mapping[str, Any]
) -> bytes:
    return encode_pairs(slots, lead, specials).encode("ascii")


def xml_escape(text: str) -> str:
    text = _XML_INVALID.sub("\ufffd", text)
    # A raw CR would be read back as a line feed (XML normalises line ends): sent as a
    # character reference it arrives as written.
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("\r", "&#13;")


def xml_encoder(root: str) -> Encoder:
    head = f'<?xml version="1.0" encoding="UTF-8"?><{root}>'
    tail = f"</{root}>"

    def encode(
        slots: tuple[Slot, ...], lead: Mapping[str, Any], specials: Mapping[str, Any]
    ) -> bytes:
        tree = _nested(slots, lead, specials, lambda value: value)
        parts = [head]
        _xml_parts(tree, parts)
        parts.append(tail)
        return "".join(parts).encode("utf-8")

    return encode


def _xml_parts(tree: Mapping[str, Any], parts: list[str]) -> None:
    for name, value in tree.items():
        parts.append(f"<{name}>")
        if isinstance(value, dict):
            _xml_parts(value, parts)
        else:
            parts.append(xml_escape(form_text(value)))
        parts.append(f"</{name}>")


def check_xml_names(slots: tuple[Slot, ...], root: str, where: str) -> None:
    if not _XML_NAME.match(root):
        raise TemplateError(f"{where}.root", f"{root!r} is not an XML element name")
    for slot in slots:
        for step in slot.steps:
            if not _XML_NAME.match(step):
                raise TemplateError(
                    f"{where}.fields.{slot.name}", f"{step!r} is not an XML element name"
                )


def url_placeholders(url: str, specials: tuple[str, ...], where: str) -> tuple[str, ...]:
    """The ``{name}`` placeholders of a URL; only the exchange's own values may fill one."""
    names = tuple(_PLACEHOLDER.findall(url))
    for name in names:
        if name not in specials:
            raise TemplateError(
                f"{where}.url", f"unknown placeholder {{{name}}} (known: {', '.join(specials)})"
            )
    leftover = _PLACEHOLDER.sub("", url)
    if "{" in leftover or "}" in leftover:
        raise TemplateError(f"{where}.url", "unbalanced { or } (placeholders are {ping_id}, ...)")
    return names


def fill_url(url: str, names: tuple[str, ...], specials: Mapping[str, Any]) -> str:
    for name in names:
        value = specials.get(name)
        url = url.replace(
            "{" + name + "}", quote(form_text("" if value is None else value), safe="")
        )
    return url


def dollars(cents: int) -> Decimal:
    return cents_to_dollars(cents)
