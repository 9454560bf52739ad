"""Reading a configured buyer's answer: paths compiled once at load (JSONPath for JSON,
XPath for XML, ``re:`` for text), documents parsed at most once per answer, and prices
read exactly.

Libraries: JSONPath is python-jsonpath (RFC 9535, compiled queries); XML is lxml, with
entity resolution, DTD loading and network access off, and any answer carrying a DTD
refused outright (a buyer's answer has no use for one, and a DTD is how entity-expansion
and external-entity attacks arrive). A plain path such as ``$.result.price`` or
``$.bids[0].payout`` is walked directly, with the library's own reading as the
reference (tests check they agree); anything else goes through the library.

Price rule (SPEC section 8): a price is a JSON number or a decimal string of digits with
an optional fraction (``12.5``, ``"12.50"``, ``"1.0000"``, ``" 7 "``), read exactly and
rounded down to the cent. ``"$12.50"``, ``"12,50"``, ``"1e3"``, ``"twelve"``, booleans,
objects and negative prices are errors; null, an empty string, zero or nothing at the
path are no bid.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any, Literal

import jsonpath
import orjson
from lxml import etree

PathKind = Literal["json", "xml", "text"]

_CENT = Decimal("0.01")
_MAX_DOLLARS = Decimal(10) ** 12
_PRICE_TEXT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*$")
# Digit runs of 16 or more: a float's repr may then differ from the text it came from.
_LONG_NUMBER = re.compile(rb"[0-9.]{16,}")
_SIMPLE_JSON_PATH = re.compile(r"^\$((?:\.[A-Za-z_][A-Za-z0-9_-]*|\[[0-9]{1,6}\])*)$")
_SIMPLE_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[([0-9]+)\]")
_MAX_MATCHES = 100
_XML_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)


class AnswerError(Exception):
    """The answer cannot be read at a path; the message names the path and the problem."""


class PathError(ValueError):
    """A path in the config is malformed; the message says how."""


@dataclass(frozen=True, slots=True)
class AnswerPath:
    """One configured path into a buyer's answer."""

    source: str  # as written in the config, for reasons
    kind: PathKind
    find: Callable[[Any], list[Any]]
    # Each value with where it sits (the steps to its parent object or element), so that
    # values read by two paths can be paired by the object they share (a leg's payout
    # and that leg's id). None for text paths: they pair by position.
    locate: Callable[[Any], list[tuple[Any, tuple[Any, ...]]]] | None = None


def compile_path(source: str, namespaces: Mapping[str, str] | None = None) -> AnswerPath:
    """A path as SPEC section 8 writes it: ``$…`` JSONPath, ``/…`` (or ``string(…)``,
    ``//…``) XPath, ``re:REGEX`` with one group. Raises PathError when malformed."""
    text = source.strip()
    if not text:
        raise PathError("empty path")
    if text.startswith("re:"):
        try:
            pattern = re.compile(text[3:])
        except re.error as exc:
            raise PathError(f"bad regular expression: {exc}") from None
        if pattern.groups != 1:
            raise PathError(f"a re: path needs exactly one group, this has {pattern.groups}")
        return AnswerPath(source, "text", _regex_finder(pattern))
    if text.startswith("$"):
        try:
            compiled = jsonpath.compile(text)
        except jsonpath.JSONPathError as exc:
            raise PathError(f"bad JSONPath: {str(exc).splitlines()[0]}") from None
        simple = _SIMPLE_JSON_PATH.match(text)
        if simple is not None:
            steps = tuple(
                int(index) if index else name
                for name, index in _SIMPLE_STEP.findall(simple.group(1))
            )
            return AnswerPath(source, "json", _walker(steps), _walker_locate(steps))
        return AnswerPath(source, "json", _library_finder(compiled), _library_locate(compiled))
    try:
        xpath = etree.XPath(text, namespaces=dict(namespaces or {}))
    except etree.XPathError as exc:
        raise PathError(
            f"bad XPath ({exc}); paths start with $ (JSON), / (XML) or re: (text)"
        ) from None
    return AnswerPath(source, "xml", _xpath_finder(xpath), _xpath_locate(xpath))


def _walker(steps: tuple[str | int, ...]) -> Callable[[Any], list[Any]]:
    def find(document: Any) -> list[Any]:
        node = document
        for step in steps:
            if isinstance(step, int):
                if not isinstance(node, list) or step >= len(node):
                    return []
            elif not isinstance(node, dict) or step not in node:
                return []
            node = node[step]
        return [node]

    return find


def _walker_locate(
    steps: tuple[str | int, ...],
) -> Callable[[Any], list[tuple[Any, tuple[Any, ...]]]]:
    find = _walker(steps)

    def locate(document: Any) -> list[tuple[Any, tuple[Any, ...]]]:
        return [(value, steps[:-1]) for value in find(document)]

    return locate


def _library_finder(compiled: Any) -> Callable[[Any], list[Any]]:
    def find(document: Any) -> list[Any]:
        if not isinstance(document, dict | list):
            # The library would parse a string document as JSON text again: an answer
            # that is one JSON string is that string, not the document inside it.
            return []
        found: list[Any] = compiled.findall(document)
        return found[:_MAX_MATCHES]

    return find


def _library_locate(compiled: Any) -> Callable[[Any], list[tuple[Any, tuple[Any, ...]]]]:
    def locate(document: Any) -> list[tuple[Any, tuple[Any, ...]]]:
        if not isinstance(document, dict | list):
            return []
        found = []
        for match in compiled.finditer(document):
            found.append((match.obj, tuple(match.parts[:-1])))
            if len(found) >= _MAX_MATCHES:
                break
        return found

    return locate


def _xpath_finder(xpath: etree.XPath) -> Callable[[Any], list[Any]]:
    def find(document: Any) -> list[Any]:
        result = xpath(document)
        if isinstance(result, list):
            return [_xml_value(item) for item in result[:_MAX_MATCHES]]
        if isinstance(result, bool):
            return [result]
        if isinstance(result, float):
            return [] if result != result else [Decimal(repr(result))]
        return [str(result)] if result != "" else []

    return find


def _xpath_locate(xpath: etree.XPath) -> Callable[[Any], list[tuple[Any, tuple[Any, ...]]]]:
    def locate(document: Any) -> list[tuple[Any, tuple[Any, ...]]]:
        result = xpath(document)
        if not isinstance(result, list):
            return [(value, ()) for value in _xpath_finder(xpath)(document)]
        tree = document.getroottree()
        found = []
        item: Any
        for item in result[:_MAX_MATCHES]:
            # An element's place is its parent; an attribute's or a text's, its element.
            owner = item.getparent() if hasattr(item, "getparent") else None
            place = tuple(tree.getpath(owner).split("/")) if owner is not None else ()
            found.append((_xml_value(item), place))
        return found

    return locate


def _xml_value(item: Any) -> Any:
    if isinstance(item, etree._Element):
        if len(item) == 0:
            return item.text or ""
        return "".join(str(text) for text in item.itertext())
    return str(item)


def _regex_finder(pattern: re.Pattern[str]) -> Callable[[Any], list[Any]]:
    def find(document: Any) -> list[Any]:
        found = []
        for match in pattern.finditer(document):
            found.append(match.group(1))
            if len(found) >= _MAX_MATCHES:
                break
        return found

    return find


class Answer:
    """One buyer answer, parsed lazily once per kind of path that reads it."""

    __slots__ = ("_body", "_content_type", "_exact", "_json", "_text", "_xml")

    def __init__(self, body: bytes, content_type: str) -> None:
        self._body = body
        self._content_type = content_type
        self._json: Any = _UNPARSED
        self._exact: Any = _UNPARSED
        self._xml: Any = _UNPARSED
        self._text: str | None = None

    def _describe(self) -> str:
        if not self._body.strip():
            return "empty body"
        kind = self._content_type.split(";")[0].strip()
        return f"content type {kind}" if kind else "no content type"

    def find(self, path: AnswerPath, *, exact: bool = False) -> list[Any]:
        """Every value at the path (at most 100). Raises AnswerError when the answer is
        not the path's kind of document. ``exact`` reads JSON numbers as Decimal."""
        if path.kind == "json":
            return path.find(self._exact_json(path) if exact else self._json_doc(path))
        if path.kind == "xml":
            return path.find(self._xml_doc(path))
        if self._text is None:
            self._text = self._body.decode("utf-8", errors="replace")
        return path.find(self._text)

    def locate(self, path: AnswerPath, *, exact: bool = False) -> list[tuple[Any, tuple[Any, ...]]]:
        """Every value at the path with its place (see AnswerPath.locate); text paths
        give each value its position."""
        if path.locate is None:
            return [(value, (i,)) for i, value in enumerate(self.find(path))]
        if path.kind == "json":
            return path.locate(self._exact_json(path) if exact else self._json_doc(path))
        return path.locate(self._xml_doc(path))

    def _json_doc(self, path: AnswerPath) -> Any:
        if self._json is _UNPARSED:
            body = self._body
            if body.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
                body = body[3:]
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:
                self._json = _FAILED
        if self._json is _FAILED:
            raise AnswerError(f"{path.source}: answer is not JSON ({self._describe()})")
        return self._json

    def _exact_json(self, path: AnswerPath) -> Any:
        document = self._json_doc(path)
        if _LONG_NUMBER.search(self._body) is None:
            return document  # every float's repr is its text: read exactly by price_cents
        if self._exact is _UNPARSED:
            self._exact = json.loads(self._body.removeprefix(b"\xef\xbb\xbf"), parse_float=Decimal)
        return self._exact

    def _xml_doc(self, path: AnswerPath) -> Any:
        if self._xml is _UNPARSED:
            self._xml = _parse_xml(self._body)
        if isinstance(self._xml, str):
            raise AnswerError(f"{path.source}: {self._xml} ({self._describe()})")
        return self._xml


_UNPARSED = object()
_FAILED = object()


def _parse_xml(body: bytes) -> Any:
    """The document's root, or a string saying why there is none."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        return "answer carries a DTD, refused"
    if not body.strip():
        return "answer is not XML"
    try:
        root = etree.fromstring(body, _XML_PARSER)
    except (etree.XMLSyntaxError, ValueError):
        return "answer is not well-formed XML"
    # Also in encodings the byte check above cannot see (UTF-16, UTF-32): nothing was
    # expanded (entities are off), but an answer built around a DTD is not read at all.
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        return "answer carries a DTD, refused"
    return root


def value_text(value: Any) -> str | None:
    """A found value as text (``true``, ``1``, ``Matched``); None for null or a
    container (an object or list is not a word or an id)."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if value != int(value) else str(int(value))
    return str(value)


def price_cents(value: Any, path: str) -> int | None:
    """A found price in whole cents, rounded down; None for no price (null, blank)."""
    if value is None:
        return None
    if isinstance(value, bool | dict | list):
        raise AnswerError(f"{path}: price is not a number")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        if 0.0 <= value < 1e9:
            # The usual bid: when cents/100 rounds to this very float, the float's
            # shortest decimal form (the answer's text) is cents/100 exactly.
            cents = round(value * 100)
            if cents / 100 == value:
                return cents
        if value != value or value in (float("inf"), float("-inf")):
            raise AnswerError(f"{path}: price is not a number")
        amount = Decimal(repr(value))
    elif isinstance(value, Decimal):
        amount = value
    else:
        text = str(value)
        match = _PRICE_TEXT.match(text)
        if match is None:
            if not text.strip():
                return None
            if text.strip().startswith("-"):
                raise AnswerError(f"{path}: negative price")
            raise AnswerError(f"{path}: {_quoted(text)} is not a price (digits and a point)")
        whole, _, fraction = match.group(1).partition(".")
        if len(whole) > 12:
            raise AnswerError(f"{path}: price too large")
        # Exact and rounded down: digits past the cent are dropped.
        return int(whole or "0") * 100 + int((fraction[:2] or "0").ljust(2, "0"))
    if amount < 0:
        raise AnswerError(f"{path}: negative price")
    if not amount.is_finite() or amount >= _MAX_DOLLARS:
        raise AnswerError(f"{path}: price too large")
    try:
        return int(amount.quantize(_CENT, rounding=ROUND_FLOOR).scaleb(2))
    except InvalidOperation:
        raise AnswerError(f"{path}: price too large") from None


def best_price(values: Sequence[Any], path: str) -> tuple[int, int] | None:
    """The highest price among the values found and its index; None when there is no
    price at all. One malformed price is an error: money is never guessed."""
    best: tuple[int, int] | None = None
    for index, value in enumerate(values):
        cents = price_cents(value, path)
        if cents is not None and (best is None or cents > best[0]):
            best = (cents, index)
    return best


def _quoted(text: str) -> str:
    shown = text if len(text) <= 24 else text[:21] + "..."
    return repr(shown)
