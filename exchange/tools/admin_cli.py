"""``lead-exchange admin``: the live settings API (exchange/api/admin.py) from a terminal.

    lead-exchange admin list buyers|sellers
    lead-exchange admin show ID
    lead-exchange admin pause ID          (a buyer or seller: enabled=false)
    lead-exchange admin resume ID
    lead-exchange admin add buyer|seller FILE   (one entry, YAML or JSON)
    lead-exchange admin set ID KEY=VALUE [KEY=VALUE ...]
    lead-exchange admin changes [--id ID] [--limit N]
    lead-exchange admin export [--config FILE] [-o FILE]

It talks to a running exchange (``--url``, default ``LEAD_EXCHANGE_URL`` or
http://127.0.0.1:8080) with the operator token in ``LEAD_EXCHANGE_ADMIN_TOKEN``; the
change is recorded under that token's name. KEY is a dotted path (``caps.daily``,
``filters.state.in``) and VALUE is read as YAML (``10``, ``[CA, TX]``, ``null`` to
remove a key). Output is a readable table, or the API's JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

DEFAULT_URL = "http://127.0.0.1:8080"
TOKEN_ENV = "LEAD_EXCHANGE_ADMIN_TOKEN"
URL_ENV = "LEAD_EXCHANGE_URL"
MASK = "********"
TIMEOUT_S = 15.0


class AdminError(Exception):
    """The exchange refused the call, or could not be reached: the message says why."""


class Client:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None, reason: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if reason:
            headers["X-Change-Reason"] = reason
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise AdminError(_error_text(exc.code, exc.read())) from None
        except (urllib.error.URLError, OSError) as exc:
            raise AdminError(f"cannot reach the exchange at {self.url}: {exc}") from None


def _error_text(status: int, payload: bytes) -> str:
    try:
        error = json.loads(payload)["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}"
    lines = [f"{status} {error.get('code')}: {error.get('message')}"]
    for field in error.get("fields") or ():
        where = field.get("path") or ".".join(str(p) for p in field.get("loc", ()))
        lines.append(f"  {where}: {field.get('msg')}")
    return "\n".join(lines)


# -- values -----------------------------------------------------------------------------


def parse_assignments(pairs: Sequence[str]) -> dict[str, Any]:
    """``caps.daily=10 filters.state.in=[CA, TX]`` as a merge patch."""
    patch: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise AdminError(f"{pair!r}: expected KEY=VALUE (KEY dotted, e.g. caps.daily=10)")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise AdminError(f"{pair!r}: the value is not valid YAML: {exc}") from None
        node = patch
        *parents, last = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise AdminError(f"{pair!r}: {part} is given a value and keys at once")
            node = child
        node[last] = _json_value(value)
    return patch


def _json_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node} if prefix else {}


def diff_text(before: Any, after: Any) -> str:
    """What a change did, key by key: ``caps.daily: 500 -> 10``."""
    if before is None:
        return "created"
    old, new = flatten(before), flatten(after)
    parts = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, _ABSENT) != new.get(key, _ABSENT):
            parts.append(
                f"{key}: {_short(old.get(key, _ABSENT))} -> {_short(new.get(key, _ABSENT))}"
            )
    return "; ".join(parts) or "no change"


_ABSENT = object()


def _short(value: Any) -> str:
    if value is _ABSENT:
        return "(unset)"
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


# -- tables -----------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]  # fmt: skip
    return "\n".join(lines)


def _caps_text(caps: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (caps or {}).items()) or "-"


def buyers_table(buyers: Sequence[Mapping[str, Any]]) -> str:
    return table(
        ["ID", "STATUS", "VERTICALS", "BIDS", "CAPS", "PRIORITY"],
        [
            (
                b["id"],
                "active" if b.get("enabled", True) else "paused",
                ",".join(b.get("verticals") or ()),
                f"fixed {b['price']}" if b.get("price") is not None else "real-time",
                _caps_text(b.get("caps")),
                b.get("priority", 0),
            )
            for b in buyers
        ],
    )


def sellers_table(sellers: Sequence[Mapping[str, Any]]) -> str:
    return table(
        ["ID", "STATUS", "PAYOUT_SHARE", "FLOOR", "VERTICALS", "RATE_LIMIT_PER_S"],
        [
            (
                s["id"],
                "active" if s.get("enabled", True) else "paused",
                s.get("payout_share"),
                s.get("floor", 0),
                "all" if s.get("verticals") is None else ",".join(s["verticals"]) or "none",
                s.get("rate_limit_per_s") or "-",
            )
            for s in sellers
        ],
    )


def changes_table(changes: Sequence[Mapping[str, Any]]) -> str:
    return table(
        ["VERSION", "AT", "BY", "ACTION", "TARGET", "CHANGE", "REASON"],
        [
            (
                c["version"],
                c["at"][:19].replace("T", " "),
                c["by"],
                c["action"],
                f"{c['section'][:-1]} {c['id']}" if c.get("section") else "-",
                diff_text(c.get("before"), c.get("after")) if c.get("after") else "-",
                c.get("reason") or "",
            )
            for c in changes
        ],
    )


def entry_text(section: str, entry: Mapping[str, Any]) -> str:
    text = yaml.safe_dump(dict(entry), sort_keys=False, default_flow_style=False)
    return f"{section[:-1]} {entry['id']}\n" + "\n".join("  " + line for line in text.splitlines())


# -- export -----------------------------------------------------------------------------


def with_placeholders(section: str, entries: Sequence[Any]) -> tuple[list[Any], list[str]]:
    """Masked secrets become ``${VAR}`` placeholders named after where they are, so the
    exported YAML loads once those variables are set; returns the entries and the names."""
    names: list[str] = []

    def walk(node: Any, path: list[str]) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, [*path, k]) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, path) for v in node]
        if node == MASK:
            name = re.sub(r"[^A-Z0-9]+", "_", "_".join(path).upper()).strip("_")
            names.append(name)
            return "${" + name + "}"
        return node

    out = [walk(e, [section[:-1], str(e.get("id", ""))]) for e in entries]
    return out, names


def export_text(settings: Mapping[str, Any], base: str | None) -> tuple[str, list[str]]:
    sellers, seller_vars = with_placeholders("sellers", settings["sellers"])
    buyers, buyer_vars = with_placeholders("buyers", settings["buyers"])
    document: dict[str, Any] = {}
    if base is not None:
        loaded = yaml.safe_load(base)
        if not isinstance(loaded, dict):
            raise AdminError("--config: the file's top level is not a mapping")
        document.update(loaded)
    document["sellers"] = sellers
    document["buyers"] = buyers
    header = (
        f"# Live settings version {settings['version']}, exported by lead-exchange admin export.\n"
        "# Secrets are ${VAR} placeholders: set each variable before loading this file.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False), seller_vars + buyer_vars


# -- add ------------------------------------------------------------------------------


def read_entry(path: Path, kind: str) -> dict[str, Any]:
    """One buyer or seller from a YAML or JSON file (JSON is YAML), as the API takes it;
    a file holding a ``buyers:``/``sellers:`` list of exactly one entry is taken too."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise AdminError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise AdminError(f"{path}: not valid YAML or JSON: {exc}") from None
    if isinstance(loaded, dict) and set(loaded) == {f"{kind}s"}:
        listed = loaded[f"{kind}s"]
        if not isinstance(listed, list) or len(listed) != 1:
            raise AdminError(f"{path}: {kind}s: give exactly one {kind} to add")
        loaded = listed[0]
    if not isinstance(loaded, dict):
        raise AdminError(f"{path}: expected one {kind} (a mapping with its id and settings)")
    if not isinstance(loaded.get("id"), str):
        raise AdminError(f"{path}: the {kind} needs an id")
    entry: dict[str, Any] = _json_value(loaded)
    return entry


# -- commands ---------------------------------------------------------------------------


def _find(client: Client, entry_id: str) -> tuple[str, dict[str, Any]]:
    settings = client.call("GET", "/v1/settings")
    found = [
        (section, e) for section in ("buyers", "sellers") for e in settings[section]
        if e.get("id") == entry_id
    ]  # fmt: skip
    if not found:
        raise AdminError(f"no buyer or seller {entry_id!r}")
    if len(found) > 1:
        raise AdminError(f"{entry_id!r} is both a buyer and a seller: use --buyer or --seller")
    return found[0]


def _section_of(client: Client, args: argparse.Namespace) -> str:
    if getattr(args, "buyer", False):
        return "buyers"
    if getattr(args, "seller", False):
        return "sellers"
    return _find(client, args.id)[0]


def run(args: argparse.Namespace, client: Client, out: Any) -> int:
    command = args.admin_command
    if command == "list":
        answer = client.call("GET", f"/v1/{args.section}")
        if args.json:
            return _print_json(answer, out)
        rows = answer[args.section]
        text = buyers_table(rows) if args.section == "buyers" else sellers_table(rows)
        print(f"{text}\n\nsettings version {answer['version']}", file=out)
        return 0
    if command == "show":
        section = _section_of(client, args)
        answer = client.call("GET", f"/v1/{section}/{args.id}")
        if args.json:
            return _print_json(answer, out)
        print(entry_text(section, answer[section[:-1]]), file=out)
        return 0
    if command in ("pause", "resume", "set"):
        section = _section_of(client, args)
        if command == "set":
            patch = parse_assignments(args.assignments)
        else:
            patch = {"enabled": command == "resume"}
        answer = client.call("PATCH", f"/v1/{section}/{args.id}", patch, reason=args.reason)
        if args.json:
            return _print_json(answer, out)
        print(f"{section[:-1]} {args.id}: {command} done, settings version {answer['version']}",
              file=out)  # fmt: skip
        return 0
    if command == "add":
        section = f"{args.kind}s"
        entry = read_entry(Path(args.file), args.kind)
        answer = client.call("POST", f"/v1/{section}", entry, reason=args.reason)
        if args.json:
            return _print_json(answer, out)
        print(f"{args.kind} {entry['id']}: added, settings version {answer['version']}", file=out)
        return 0
    if command == "changes":
        query = f"?limit={args.limit}" + (f"&id={args.id}" if args.id else "")
        answer = client.call("GET", "/v1/changes" + query)
        if args.json:
            return _print_json(answer, out)
        print(changes_table(answer["changes"]), file=out)
        return 0
    if command == "export":
        settings = client.call("GET", "/v1/settings")
        base = Path(args.config).read_text() if args.config else None
        text, names = export_text(settings, base)
        if args.output:
            Path(args.output).write_text(text)
        else:
            out.write(text)
        if names:
            print("set before loading: " + " ".join(names), file=sys.stderr)
        return 0
    raise AdminError(f"unknown command {command!r}")


def _print_json(answer: Any, out: Any) -> int:
    print(json.dumps(answer, indent=2), file=out)
    return 0


def add_parser(sub: Any) -> None:
    admin = sub.add_parser("admin", help="change buyers and sellers of a running exchange")
    admin.add_argument("--url", default=os.environ.get(URL_ENV, DEFAULT_URL))
    admin.add_argument("--json", action="store_true", help="the API's JSON answer")
    commands = admin.add_subparsers(dest="admin_command", required=True)
    listing = commands.add_parser("list", help="every buyer or seller")
    listing.add_argument("section", choices=["buyers", "sellers"])
    for name, text in (("show", "one buyer or seller"),
                       ("pause", "stop a buyer's leads, or refuse a seller's traffic"),
                       ("resume", "end a buyer's or seller's pause"),
                       ("set", "change settings: KEY=VALUE ...")):  # fmt: skip
        command = commands.add_parser(name, help=text)
        command.add_argument("id", metavar="ID")
        which = command.add_mutually_exclusive_group()
        which.add_argument("--buyer", action="store_true", help="ID is a buyer's")
        which.add_argument("--seller", action="store_true", help="ID is a seller's")
        if name != "show":
            command.add_argument("--reason", default=None, help="recorded with the change")
        if name == "set":
            command.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    add = commands.add_parser("add", help="a new buyer or seller from a YAML or JSON file")
    add.add_argument("kind", choices=["buyer", "seller"])
    add.add_argument("file", metavar="FILE", help="one entry, as in the config's list")
    add.add_argument("--reason", default=None, help="recorded with the change")
    changes = commands.add_parser("changes", help="the history of changes, newest first")
    changes.add_argument("--id", default=None, help="one buyer's or seller's only")
    changes.add_argument("--limit", type=int, default=20)
    export = commands.add_parser("export", help="the live settings as YAML")
    export.add_argument("--config", default=None, help="a YAML file whose other sections to keep")
    export.add_argument("-o", "--output", default=None, help="write here (default: stdout)")
    admin.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"set {TOKEN_ENV} to an operator token", file=sys.stderr)
        return 2
    try:
        return run(args, Client(args.url, token), sys.stdout)
    except AdminError as exc:
        print(str(exc), file=sys.stderr)
        return 1
