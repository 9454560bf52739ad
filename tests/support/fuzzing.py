"""What the live fuzzers (tests/faults/test_fuzz_buyer_answers.py and
tests/faults/test_fuzz_seller_bodies.py) share: JSON text no encoder writes
(lone-surrogate escapes, numbers past any float, invalid UTF-8), the hostile values
that go into it, an exchange kept for a whole Hypothesis run and rebuilt after an
example that broke it, and the checks every example ends with.

Why rebuild: the examples share one exchange and one database so that they are cheap,
but an example that poisons the exchange (a batch writer that can no longer write, say)
would make every later example fail for its sake, and Hypothesis would then shrink to an
example that is innocent. After a failed example the next one starts on a new exchange
over a new database, so the example Hypothesis reports is the one that did the harm.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from exchange.core.config import LoadedConfig
from tests.support.faults import create_database, serve_exchange
from tests.support.harness import ADMIN_TOKEN, FULL_LEAD, PING_LEAD, Exchange

# The largest bid or sale the ledger may hold: a vertical's default max_bid, 10,000.00.
MAX_BID_CENTS = 1_000_000


# -- examples per run -------------------------------------------------------------------


def live_settings(ci_examples: int) -> settings:
    """Settings for a fuzzer that drives a live exchange (each example is a few HTTP
    round trips): ``ci_examples`` under the default profile, always the same examples so
    a failure reproduces (``FUZZ_RANDOM=1`` explores instead); under any other profile
    (``pytest --hypothesis-profile=deep``) that profile's count, randomised."""
    profile = settings.get_current_profile_name()
    common: dict[str, Any] = {
        "deadline": None,
        # Explaining a failure replays it many times over, each on a rebuilt exchange.
        "phases": [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    }
    if profile in ("default", "ci"):
        return settings(
            max_examples=ci_examples,
            derandomize=os.environ.get("FUZZ_RANDOM") != "1",
            **common,
        )
    return settings(**common)


# -- JSON text, written by hand -----------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is: a number past any float (1e400, 2**64), NaN, a nested
    array 5000 deep, or text that is not JSON at all."""

    text: str


def json_text(value: object, ascii_only: bool = True) -> str:
    """``value`` as JSON text. Python strings may hold NUL, control characters and lone
    surrogates: with ``ascii_only`` they are written as ``\\uXXXX`` escapes (what a JSON
    encoder in another language writes); without it non-ASCII is written raw, and a lone
    surrogate then becomes bytes that are not UTF-8 (see ``json_bytes``)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Mapping):
        items = (
            f"{json_text(k, ascii_only) if isinstance(k, Raw) else _string(k, ascii_only)}:"
            f" {json_text(v, ascii_only)}"
            for k, v in value.items()
        )
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(json_text(v, ascii_only) for v in value) + "]"
    if isinstance(value, str):
        return _string(value, ascii_only)
    return json.dumps(value)  # bool, None, int of any size, float (nan as NaN)


def _string(value: str, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


def json_bytes(value: object, ascii_only: bool = True) -> bytes:
    return json_text(value, ascii_only).encode("utf-8", "surrogatepass")


# -- hostile values ------------------------------------------------------------------------

# Characters PostgreSQL text and jsonb refuse or that trip encoders and log lines.
NASTY_CHARACTERS = [
    "\x00", "\x01", "\x1b", "\x1f", "\x7f", "\x85", "\u2028", "\u2029", "\ufeff", "\uffff",
    "\ufffe", "\r\n", "\t", "\\", '"', "'", "\U0001f600", "é", "İ", "ﬃ", "\u0301", "\U0010ffff",
]  # fmt: skip
# Lone surrogates: most JSON parsers refuse them, so they are kept to one string in six
# (more would stop most bodies at parsing, short of validation and the ledger).
LONE_SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "\ud83d"]


def _text_with(characters: list[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda before, nasty, after: before + nasty + after,
        st.text(max_size=12),
        st.lists(st.sampled_from(characters), min_size=1, max_size=4).map("".join),
        st.text(max_size=12),
    )


# Text with at least one character the storage boundary must handle, among plain text.
nasty_text = st.one_of(
    *[_text_with(NASTY_CHARACTERS)] * 5, _text_with(NASTY_CHARACTERS + LONE_SURROGATES)
)

long_text = st.builds(
    lambda n, tail: "x" * n + tail,
    st.sampled_from([127, 128, 129, 200, 255, 256, 501, 4096, 70_000]),
    st.sampled_from(["", "\x00", "\ud800", "é"]),
)

# Text PostgreSQL refuses or that trips log lines, yet valid Unicode: it gets past JSON
# parsing (a lone surrogate does not) and into validation and the ledger.
STORABLE_LOOKING = ["\x00", "\x01", "\x1b", "\x1f", "\x7f", "\x85", "\u2028", "\ufeff",
                    "\uffff", "\U0010ffff", "\r\n"]  # fmt: skip
control_text = st.builds(
    lambda before, nasty, after: before + nasty + after,
    st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
    st.lists(st.sampled_from(STORABLE_LOOKING), min_size=1, max_size=3).map("".join),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
)

hostile_text = st.one_of(
    nasty_text, long_text, st.text(max_size=40), st.sampled_from(["", " ", "\x00", "\ud800"])
)

# Numbers as JSON text: past int64 and float range, negative zero, exponents, NaN.
NUMBER_TOKENS = [
    "0", "-0", "-0.0", "1", "-1", "0.001", "12.345", "12.5", "1e17", "9e16", "1e308",
    "1.7976931348623157e308", "1e309", "1e400", "-1e400", "1e-400", "5e-324",
    str(2**31), str(2**53 + 1), str(2**63 - 1), str(2**63), str(2**64), str(-(2**63) - 1),
    str(10**30), "1" + "0" * 400, "NaN", "Infinity", "-Infinity", "1E2", "0.1e3",
    "12.50000000000000000001",
]  # fmt: skip

number_tokens = st.one_of(
    st.sampled_from(NUMBER_TOKENS).map(Raw),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: Raw(repr(f))),
)

deep_nesting = st.sampled_from([64, 1000, 5000]).map(lambda depth: Raw("[" * depth + "]" * depth))

scalars = st.one_of(st.none(), st.booleans(), hostile_text, number_tokens, st.text(max_size=8))

# Any JSON value, hostile scalars at the leaves, now and then nested very deep.
hostile_values = st.one_of(
    st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(hostile_text | st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=6,
    ),
    deep_nesting,
)


# -- an exchange that lasts a whole run -----------------------------------------------------


class LiveExchange:
    """One exchange over its own database for a whole Hypothesis run; ``ready`` rebuilds
    both after an example marked ``broken``."""

    def __init__(self, server_dsn: str, config: Callable[[], LoadedConfig]) -> None:
        self._server_dsn = server_dsn
        self._config = config
        self._stack: AsyncExitStack | None = None
        self._exchange: Exchange | None = None
        self.database_url = ""
        self.db: asyncpg.Connection | None = None
        self.broken = False
        self.builds = 0
        self.build_seconds = 0.0

    async def ready(self) -> Exchange:
        if self._exchange is not None and not self.broken:
            return self._exchange
        started = time.monotonic()
        await self.close()
        stack = AsyncExitStack()
        self.database_url = await create_database(self._server_dsn)
        self._exchange = await stack.enter_async_context(
            serve_exchange(self._config(), self.database_url)
        )
        self.db = await asyncpg.connect(self.database_url)
        stack.push_async_callback(self.db.close)
        self._stack = stack
        self.broken = False
        self.builds += 1
        self.build_seconds += time.monotonic() - started
        return self._exchange

    async def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._exchange = self._stack, None, None
            await stack.aclose()

    @asynccontextmanager
    async def example(self) -> AsyncIterator[Exchange]:
        """One example on a healthy exchange; a failure marks it for rebuilding."""
        exchange = await self.ready()
        try:
            yield exchange
        except BaseException:
            self.broken = True
            raise


# -- the checks every example ends with ------------------------------------------------------


def seller_answer_problem(
    what: str, status: int, body: Any, headers: Mapping[str, str]
) -> str | None:
    """Why one answer to a seller breaks SPEC section 4, or None: never a 5xx but a 503
    with Retry-After, and every 4xx and 503 the JSON error shape."""
    if status >= 500 and not (status == 503 and "Retry-After" in headers):
        return f"{what}: {status} {_short(body)}"
    if status >= 400:
        problem = error_shape_problem(body)
        if problem is not None:
            return f"{what}: {status} is not a SPEC section 4 error ({problem}): {_short(body)}"
    return None


def error_shape_problem(body: Any) -> str | None:
    if not isinstance(body, dict) or set(body) != {"error"}:
        return "not a JSON object with one key, error"
    error = body["error"]
    if not isinstance(error, dict) or not {"code", "message"} <= set(error):
        return "error lacks code or message"
    if not set(error) <= {"code", "message", "fields"}:
        return f"error has other keys: {sorted(set(error) - {'code', 'message', 'fields'})}"
    if not isinstance(error["code"], str) or not isinstance(error["message"], str):
        return "code and message must be strings"
    fields = error.get("fields")
    if fields is not None and not (
        isinstance(fields, list)
        and all(
            isinstance(f, dict) and isinstance(f.get("loc"), list) and isinstance(f.get("msg"), str)
            for f in fields
        )
    ):
        return "fields must be a list of {loc: [...], msg: text}"
    return None


def _short(body: Any) -> str:
    text = repr(body)
    return text if len(text) <= 300 else text[:300] + "..."


async def honest_round(ex: Exchange) -> tuple[list[str], str | None]:
    """An ordinary ping and post (a documented 503 is retried, as a seller would); what
    went wrong, and the ping id."""
    status, ping = await _retrying(
        ex, "/v1/ping", {"vertical": "auto_insurance", "lead": PING_LEAD}
    )
    if status != 200 or not isinstance(ping, dict) or ping.get("status") != "bid":
        return [f"the next honest ping: {status} {_short(ping)}"], None
    ping_id: str = ping["ping_id"]
    status, post = await _retrying(ex, "/v1/post", {"ping_id": ping_id, "lead": FULL_LEAD})
    if status != 200 or not isinstance(post, dict) or post.get("status") != "sold":
        return [f"the next honest post: {status} {_short(post)}"], ping_id
    return [], ping_id


async def _retrying(ex: Exchange, path: str, body: Mapping[str, Any]) -> tuple[int, Any]:
    for _ in range(5):
        status, answer, headers = await ex.call("POST", path, body)
        if status != 503 or "Retry-After" not in headers:
            break
        await asyncio.sleep(0.2)
    return status, answer


async def readiness_problem(ex: Exchange) -> str | None:
    status, body, _ = await ex.call("GET", "/readyz", key=None)
    return None if status == 200 else f"/readyz answered {status} with the database up: {body}"


async def auction_record(ex: Exchange, ping_id: str) -> tuple[str | None, Any]:
    status, body, _ = await ex.call("GET", f"/v1/auctions/{ping_id}", key=ADMIN_TOKEN)
    if status != 200:
        return f"GET /v1/auctions/{ping_id}: {status} {_short(body)}", None
    return None, body


async def money_problems(db: asyncpg.Connection) -> list[str]:
    """Bids, posted prices, quotes and sales in the ledger above the largest bid."""
    rows = await db.fetch(
        "SELECT 'bid' AS what, max(price_cents) AS cents FROM bid_outcomes WHERE outcome = 'bid'"
        " UNION ALL SELECT 'post attempt', max(price_cents) FROM post_attempts"
        " UNION ALL SELECT 'ping quote', max(price_cents) FROM pings"
        " UNION ALL SELECT 'sale', max(price_cents) FROM sales"
    )
    return [
        f"a recorded {r['what']} of {r['cents']} cents, above {MAX_BID_CENTS}"
        for r in rows
        if r["cents"] is not None and r["cents"] > MAX_BID_CENTS
    ]
