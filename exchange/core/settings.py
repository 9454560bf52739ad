"""Live settings, the pure part: the buyers and sellers document that operators change
without a restart, how a change is merged into it, and how secrets are kept out of what
is shown back.

The document is ``{"sellers": [...], "buyers": [...]}``, each entry in the YAML's own
form (exchange/auction/live.py validates the whole config built from it exactly as a
file is validated). A PATCH is a JSON merge patch (RFC 7396): objects merge key by key,
any other value (lists included) replaces, ``null`` removes a key (back to its default).
The masked placeholder sent back for a secret keeps the stored value.

Secrets the YAML gave stay in the YAML: the stored document holds them masked, and each
process fills them from its own file (``resolve``), so a key or HMAC secret of the file
never reaches the database. A key given over the API is kept as its SHA-256 (a seller's
``api_key``, a buyer's ``return_api_key``); a buyer ``secret`` or ``auth`` value given
over the API is kept as given (it must reach every process).

Secrets are the models' own: every config field declared ``repr=False`` (seller
``api_key``, buyer ``secret`` and ``return_api_key``, ``auth`` values...), the stored
key hashes (``*_sha256``), and in free-form maps (``adapter_options``, ``headers``) any
key that names a credential.
"""

from __future__ import annotations

import copy
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from exchange.core.config import BuyerConfig, SellerConfig, hash_key
from exchange.core.errors import Conflict, FieldError, Invalid, NotFound

Section = Literal["buyers", "sellers"]
SECTIONS: tuple[Section, ...] = ("buyers", "sellers")
SECTIONS_IN_FILE_ORDER: tuple[Section, ...] = ("sellers", "buyers")
MASK = "********"
_MODELS: Mapping[str, type[BaseModel]] = {"buyers": BuyerConfig, "sellers": SellerConfig}
# A key given in clear is stored as its hash (the exchange only ever compares hashes).
_HASHED = {"api_key": "api_key_sha256", "return_api_key": "return_api_key_sha256"}
_CREDENTIAL = re.compile(r"secret|token|password|passwd|key|auth|signature|credential", re.I)
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class Change:
    """One change worked out against a document: the new document and what the changed
    entry looked like before (None for a new one) and after, both masked."""

    section: Section
    target_id: str
    action: str  # create | update
    before: dict[str, Any] | None
    after: dict[str, Any]
    document: dict[str, Any]  # stored form: keys given in clear replaced by their hash
    checked: dict[str, Any]  # the same with the entry as given: what is validated


def empty_document() -> dict[str, Any]:
    return {"sellers": [], "buyers": []}


def document_of(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The buyers and sellers of a config document (the YAML's) as stored: every secret
    masked. A masked secret in the stored document means "this process's YAML's value
    for the same entry and key" (``resolve``): the YAML's secrets never reach the
    database."""
    return {
        section: [
            masked(section, _jsonable(entry))
            for entry in raw.get(section) or ()
            if isinstance(entry, Mapping)
        ]
        for section in SECTIONS_IN_FILE_ORDER
    }


def resolve(
    document: Mapping[str, Any], bootstrap: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The document with each masked secret replaced by the bootstrap YAML's value for
    the same entry and key; a problem ("key.path: ...") for each one the YAML lacks."""
    problems: list[str] = []
    out: dict[str, Any] = {}
    for section in SECTIONS_IN_FILE_ORDER:
        mine = {
            e.get("id"): _jsonable(e)
            for e in bootstrap.get(section) or ()
            if isinstance(e, Mapping)
        }
        out[section] = [
            _filled(entry, mine.get(entry.get("id")), f"{section}[{i}]", problems)
            for i, entry in enumerate(document.get(section) or ())
        ]
    return out, problems


def _filled(node: Any, source: Any, path: str, problems: list[str]) -> Any:
    if node == MASK:
        if source is None or source == MASK:
            problems.append(f"{path}: a secret kept in this process's YAML, which lacks it")
            return node
        return source
    if isinstance(node, Mapping):
        source = source if isinstance(source, Mapping) else {}
        return {k: _filled(v, source.get(k), f"{path}.{k}", problems) for k, v in node.items()}
    return node


def stored_form(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An entry as it is kept: JSON values only (YAML dates as text, map keys as text, as
    the models read them), and keys given in clear replaced by their hash."""
    out = _jsonable(entry)
    assert isinstance(out, dict)
    for clear, hashed in _HASHED.items():
        value = out.get(clear)
        if isinstance(value, str) and value != MASK:  # masked: the YAML's, never stored
            del out[clear]
            out[hashed] = hash_key(value)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {_key_text(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _key_text(key: object) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def masked(section: Section, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry with every secret replaced by MASK (safe to show or to record)."""
    out = _mask(_MODELS[section], entry)
    assert isinstance(out, dict)
    return out


def _mask(model: type[BaseModel] | None, node: Any) -> Any:
    if not isinstance(node, Mapping):
        return copy.deepcopy(node)
    out: dict[str, Any] = {}
    fields = _fields_by_name(model) if model is not None else {}
    for key, value in node.items():
        info = fields.get(key)
        if value is not None and _secret(key, info, model is None):
            out[key] = MASK
        elif info is not None:
            out[key] = _mask(_nested_model(info.annotation), value)
        elif model is None and isinstance(value, Mapping):
            out[key] = _mask(None, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _secret(key: str, info: Any, free_form: bool) -> bool:
    if key.endswith("_sha256"):
        return True
    if info is not None:
        return info.repr is False
    return free_form and bool(_CREDENTIAL.search(key))


def _fields_by_name(model: type[BaseModel]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        fields[name] = info
        if info.alias:
            fields[info.alias] = info
    return fields


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (``X``, ``X | None``), or None for a free-form map
    (``dict[str, Any]``: masked by key names) or a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Union or origin is types.UnionType:
        for arg in args:
            found = _nested_model(arg)
            if found is not None:
                return found
        return None
    if origin is dict and args and args[-1] is not Any:
        return _nested_model(args[-1])
    return None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge recursively, null removes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _unmasked(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """The patch without masked placeholders (a secret sent back as shown stays as it is),
    and with a key given in clear replacing its stored hash."""
    out: dict[str, Any] = {}
    for key, value in patch.items():
        if value == MASK:
            continue
        if isinstance(value, Mapping):
            inner = current.get(key)
            out[key] = _unmasked(inner if isinstance(inner, Mapping) else {}, value)
        else:
            out[key] = value
    for clear, hashed in _HASHED.items():
        if out.get(clear) is not None and hashed in current and hashed not in out:
            out[hashed] = None
        if out.get(hashed) is not None and clear in current and clear not in out:
            out[clear] = None
    return out


def entry_index(document: Mapping[str, Any], section: Section, entry_id: str) -> int | None:
    for i, entry in enumerate(document.get(section) or ()):
        if entry.get("id") == entry_id:
            return i
    return None


def find_entry(document: Mapping[str, Any], section: Section, entry_id: str) -> dict[str, Any]:
    index = entry_index(document, section, entry_id)
    if index is None:
        raise NotFound(f"no {section[:-1]} {entry_id!r}")
    entry: dict[str, Any] = document[section][index]
    return entry


def update_entry(
    document: Mapping[str, Any], section: Section, entry_id: str, patch: Any
) -> Change:
    """The document with one entry changed by a merge patch (validation is the caller's:
    the whole config is checked as the YAML is)."""
    if not isinstance(patch, Mapping):
        raise Invalid("the change must be a JSON object")
    if "id" in patch and patch["id"] != entry_id:
        raise Invalid("an id cannot be changed", [{"loc": ["id"], "msg": "cannot be changed"}])
    index = entry_index(document, section, entry_id)
    if index is None:
        raise NotFound(f"no {section[:-1]} {entry_id!r}")
    current = document[section][index]
    given = _jsonable(merge_patch(current, _unmasked(current, patch)))
    after = stored_form(given)
    return Change(
        section, entry_id, "update", masked(section, current), masked(section, after),
        _replaced(document, section, index, after), _replaced(document, section, index, given),
    )  # fmt: skip


def add_entry(document: Mapping[str, Any], section: Section, entry: Any) -> Change:
    if not isinstance(entry, Mapping):
        raise Invalid("the new entry must be a JSON object")
    entry_id = entry.get("id")
    if not isinstance(entry_id, str) or not entry_id:
        raise Invalid("the new entry needs an id", [{"loc": ["id"], "msg": "is required"}])
    if entry_index(document, section, entry_id) is not None:
        raise Conflict(f"{section[:-1]} {entry_id!r} exists; change it with PATCH")
    given = _jsonable(entry)
    after = stored_form(given)
    index = len(document.get(section) or ())
    return Change(
        section, entry_id, "create", None, masked(section, after),
        _replaced(document, section, index, after), _replaced(document, section, index, given),
    )  # fmt: skip


def _replaced(
    document: Mapping[str, Any], section: Section, index: int, entry: dict[str, Any]
) -> dict[str, Any]:
    new = {key: list(document.get(key) or ()) for key in ("sellers", "buyers")}
    if index == len(new[section]):
        new[section].append(entry)
    else:
        new[section][index] = entry
    return new


def problem_fields(found: list[str], section: Section, index: int) -> list[FieldError]:
    """Config problems ("key.path: what is wrong") as API problems: ``loc`` relative to the
    changed entry when the problem is in it (else the whole key path), ``path`` the
    key path a YAML file would have named."""
    fields: list[FieldError] = []
    for problem in found:
        path, sep, msg = problem.partition(": ")
        if not sep:
            path, msg = "<root>", problem
        parts: list[str | int] = [
            int(m.group(2)) if m.group(2) is not None else m.group(1)
            for m in _PATH_PART.finditer(path)
        ]
        mine = parts[:2] == [section, index]
        loc = (parts[2:] or ["body"]) if mine else parts
        fields.append({"loc": loc, "msg": msg, "path": path})
    return fields
