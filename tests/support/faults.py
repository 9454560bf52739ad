"""What the fault, contract and security tests share: the OpenAPI contract checker, an
in-process exchange that also serves /openapi.json, raw-socket buyers that misbehave, a
PostgreSQL the test can stop and freeze, `lead-exchange serve` as a subprocess, memory
readings, seller traffic that remembers what sellers were told, and the ledger checks.

Everything listens on and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import jsonschema_rs
import orjson
from aiohttp import web

from exchange.api import openapi
from exchange.api.common import CTX
from exchange.app import AppOptions, create_app
from exchange.config import parse_config
from exchange.core.config import LoadedConfig
from tests.support.harness import FULL_LEAD, PING_LEAD, SELLER_KEY, Exchange

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


# -- the OpenAPI contract ---------------------------------------------------------------


class Contract:
    """exchange/api/openapi.yaml, able to say whether one real answer fits it."""

    def __init__(self, document: Mapping[str, Any] | None = None) -> None:
        self.document = dict(document) if document is not None else openapi.load_document()
        self._validators: dict[str, jsonschema_rs.Validator] = {}

    def operations(self) -> set[tuple[str, str]]:
        """Every documented (METHOD, path template)."""
        return {
            (method.upper(), path)
            for path, item in self.document["paths"].items()
            for method in item
            if method in {"get", "post", "put", "patch", "delete"}
        }

    def responses(self, method: str, path: str) -> dict[str, Any]:
        responses: dict[str, Any] = self.document["paths"][path][method.lower()]["responses"]
        return {status: self.resolve(r) for status, r in responses.items()}

    def resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            node = self._pointer(node["$ref"])
        return node

    def _pointer(self, ref: str) -> Any:
        assert ref.startswith("#/"), ref
        node: Any = self.document
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def validator(self, schema: Mapping[str, Any]) -> jsonschema_rs.Validator:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()
        validator = self._validators.get(key)
        if validator is None:
            # The components travel with the schema so its "#/components/..." refs resolve.
            root = {**schema, "components": self.document["components"]}
            validator = jsonschema_rs.Draft202012Validator(root, validate_formats=True)
            self._validators[key] = validator
        return validator

    def problems(
        self,
        method: str,
        path: str,
        status: int,
        headers: Mapping[str, str],
        raw: bytes,
    ) -> list[str]:
        """What is wrong with one answer, judged by the document; empty when it fits."""
        where = f"{method} {path} -> {status}"
        responses = self.responses(method, path)
        response = responses.get(str(status))
        if response is None:
            return [f"{where}: status not documented (documented: {sorted(responses)})"]
        found: list[str] = []
        for name, header in (response.get("headers") or {}).items():
            header = self.resolve(header)
            if header.get("required") and name not in headers:
                found.append(f"{where}: required header {name} missing")
            elif (
                name in headers
                and header.get("schema", {}).get("type") == "integer"
                and not headers[name].isdigit()
            ):
                found.append(f"{where}: header {name}={headers[name]!r} is not an integer")
        content = response.get("content") or {}
        media = headers.get("Content-Type", "").split(";")[0].strip()
        if media not in content:
            return [*found, f"{where}: content type {media!r} not documented ({sorted(content)})"]
        schema = content[media].get("schema")
        if media == "application/json" and schema is not None:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return [*found, f"{where}: body is not JSON: {raw[:200]!r}"]
            found.extend(
                f"{where}: {error.instance_path}: {error.message}"
                for error in self.validator(schema).iter_errors(body)
            )
        return found


# -- an exchange in this process --------------------------------------------------------


def with_openapi(app: web.Application) -> web.Application:
    """The app's router plus GET /openapi.json, unless app.py already wires it."""
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    if openapi.PATH not in paths:
        app.add_routes(openapi.routes())
    return app


@asynccontextmanager
async def serve_exchange(
    loaded: LoadedConfig | str, database_url: str, batch_interval_s: float = 0.01
) -> AsyncIterator[Exchange]:
    """tests.support.harness.running_exchange, with /openapi.json served."""
    if isinstance(loaded, str):
        loaded = parse_config(loaded, "test.yaml", env={})
    app = with_openapi(
        create_app(loaded, AppOptions(database_url=database_url, batch_interval_s=batch_interval_s))
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http:
            yield Exchange(f"http://{LOOPBACK}:{port}", app[CTX], http)
    finally:
        await runner.cleanup()


# -- memory -----------------------------------------------------------------------------


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size from /proc/<pid>/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line")


class RssPeak:
    """Samples this process's RSS every few milliseconds while the block runs."""

    def __init__(self, every_s: float = 0.002) -> None:
        self.every_s = every_s
        self.baseline = 0
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    async def __aenter__(self) -> RssPeak:
        self.baseline = self.peak = rss_bytes()
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.peak = max(self.peak, rss_bytes())

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes())
            await asyncio.sleep(self.every_s)


# -- buyers written on raw sockets ------------------------------------------------------


@dataclass(frozen=True)
class RawRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # names lower case
    body: bytes


# A behaviour answers one request on the raw stream; True keeps the connection for another.
Behaviour = Callable[[RawRequest, asyncio.StreamWriter], Awaitable[bool]]


class RawBuyer:
    """A buyer endpoint on raw asyncio streams, for misbehaviour no HTTP framework allows:
    it reads a request, records it, and hands the socket to ``behaviour``."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.requests: list[RawRequest] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def url(self, path: str = "/ping") -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    async def __aenter__(self) -> RawBuyer:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                if not await self.behaviour(request, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        except asyncio.CancelledError:  # the buyer is being torn down: nothing to report
            return
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.transport.abort()


async def _read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawRequest(method, path, headers, body)


def response_head(status: int, *headers: tuple[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -- a PostgreSQL the test controls -----------------------------------------------------


class ControlledPostgres:
    """A private PostgreSQL cluster (the pgserver wheel's binaries) on 127.0.0.1 at a fixed
    port, so a test can stop, restart and freeze it while clients keep the same URL.
    Run as root, it runs as the ``pgserver`` system user, as pgserver itself does."""

    def __init__(self) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        self.bin = Path(POSTGRES_BIN_PATH)
        self.dir = Path(tempfile.mkdtemp(prefix="lead-exchange-pgfault-"))
        self.dir.chmod(0o755)
        self.data = self.dir / "data"
        self.port = free_port()
        self.running = False
        self._user: str | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/postgres"

    def database(self, name: str) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/{name}"

    def _run(self, *args: str, timeout: float = 30) -> None:
        subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            timeout=timeout,
            user=self._user,
            cwd=self.dir,
        )

    def init(self) -> None:
        self.data.mkdir()
        if os.geteuid() == 0:
            from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

            self._user = "pgserver"
            entry = ensure_user_exists(self._user)
            ensure_prefix_permissions(self.data)
            # As pgserver does for its own server: the binaries may sit below a folder
            # only root can enter (a checkout in a private temporary folder).
            ensure_prefix_permissions(self.bin)
            for path in (self.dir, self.data):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "utf8",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = f"-h {LOOPBACK} -p {self.port} -k {self.dir} -c fsync=off -c max_connections=200"
        self._run(
            "pg_ctl", "-D", str(self.data), "-w", "-t", "20", "-l", str(self.dir / "log"),
            "-o", options, "start",
        )  # fmt: skip
        self.running = True

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clients are disconnected, then shutdown; ``immediate``: like a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", mode, "stop")
        self.running = False

    def _pids(self) -> list[int]:
        import psutil

        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        return [pid, *(child.pid for child in postmaster.children(recursive=True))]

    def freeze(self) -> None:
        """SIGSTOP every server process: connections stay open but nothing answers, as
        when the database host hangs or the network drops packets."""
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.thaw()
        with contextlib.suppress(Exception):
            self.stop("immediate")


# -- `lead-exchange serve` as a subprocess ----------------------------------------------


class ExchangeProcess:
    """The real CLI in its own process: started, probed, killed, restarted."""

    def __init__(
        self,
        config_path: Path,
        database_url: str,
        log_path: Path,
        port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.config_path = config_path
        self.database_url = database_url
        self.log_path = log_path
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        script = Path(sys.executable).with_name("lead-exchange")
        program = [str(script)] if script.exists() else [sys.executable, "-m", "exchange"]
        return [
            *program, "serve", "--config", str(self.config_path), "--host", LOOPBACK,
            "--port", str(self.port), "--database-url", self.database_url, *self.extra_args,
        ]  # fmt: skip

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                self.command(), stdout=log, stderr=log, env=env, start_new_session=True
            )

    def launch(self) -> None:
        """Start the process without waiting for it to be ready."""
        self.process = self._spawn()

    async def start(self, timeout_s: float = 30.0) -> None:
        self.process = self._spawn()
        give_up = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < give_up:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"exchange exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(self.url + "/readyz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"exchange not ready within {timeout_s} s:\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        give_up = time.monotonic() + timeout_s
        while self.process.poll() is None:
            if time.monotonic() > give_up:
                raise TimeoutError(f"exchange still running after {timeout_s} s")
            await asyncio.sleep(0.02)
        return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """Leave no process behind (for finally blocks)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


# -- seller traffic that remembers what sellers were told -------------------------------


@dataclass(frozen=True)
class Answer:
    kind: str  # ping, post, leads
    status: int | None  # None: no HTTP answer at all (connection refused, reset)
    body: Any
    started: float  # time.monotonic()
    elapsed_s: float
    retry_after: str | None = None
    error: str | None = None


@dataclass
class SellerTraffic:
    """A seller's calls through one aiohttp session, every answer kept."""

    http: aiohttp.ClientSession
    base_url: str
    key: str = SELLER_KEY
    timeout_s: float = 30.0
    answers: list[Answer] = field(default_factory=list)

    async def call(self, kind: str, body: Mapping[str, Any]) -> Answer:
        path = {"ping": "/v1/ping", "post": "/v1/post", "leads": "/v1/leads"}[kind]
        started = time.monotonic()
        try:
            async with self.http.post(
                self.base_url + path,
                data=orjson.dumps(body),
                headers={"Authorization": f"Bearer {self.key}",
                         "Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as response:  # fmt: skip
                raw = await response.read()
                try:
                    parsed = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    parsed = raw
                answer = Answer(
                    kind, response.status, parsed, started, time.monotonic() - started,
                    response.headers.get("Retry-After"),
                )  # fmt: skip
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            answer = Answer(
                kind, None, None, started, time.monotonic() - started, error=type(exc).__name__
            )
        self.answers.append(answer)
        return answer

    def told(self) -> Told:
        """What the sellers were told by every post and direct post answered 200."""
        told = Told()
        for answer in self.answers:
            if answer.kind in ("post", "leads") and answer.status == 200:
                told.add(answer.body)
        return told


@dataclass
class Told:
    sold: dict[str, int] = field(default_factory=dict)  # ping_id -> payout cents
    unsold: set[str] = field(default_factory=set)
    contradictions: list[str] = field(default_factory=list)

    def add(self, body: Mapping[str, Any]) -> None:
        ping_id = body["ping_id"]
        if body["status"] == "sold":
            cents = round(body["price"] * 100)
            if ping_id in self.unsold or self.sold.get(ping_id, cents) != cents:
                self.contradictions.append(ping_id)
            self.sold[ping_id] = cents
        else:
            if ping_id in self.sold:
                self.contradictions.append(ping_id)
            self.unsold.add(ping_id)


# -- the ledger checks ------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerFigures:
    sales: int
    sold_answers: int
    unsold_answers: int
    payout_told_cents: int
    payout_recorded_cents: int  # of the sales sellers were told about
    sales_nobody_was_told: int  # a sale whose answer never reached the seller
    sales_without_ping_row: int  # a sale whose (batched) ping row was lost
    problems: tuple[str, ...]


async def check_ledger(
    database_url: str, told: Told, hourly_caps: Mapping[str, int] | None = None
) -> LedgerFigures:
    """Every "sold" a seller heard has its sale row at that payout, no "unsold" has one,
    no ping is sold twice, every sale agrees with its post's result, and no buyer sold
    more in one UTC hour than its ``hourly_caps`` entry."""
    conn = await asyncpg.connect(database_url)
    try:
        sales = {
            str(r["ping_id"]): r
            for r in await conn.fetch("SELECT ping_id, payout_cents, price_cents FROM sales")
        }
        twice = await conn.fetch("SELECT ping_id FROM sales GROUP BY ping_id HAVING count(*) > 1")
        disagreeing = await conn.fetch(
            "SELECT s.ping_id FROM sales s LEFT JOIN posts p USING (ping_id)"
            " WHERE p.status IS DISTINCT FROM 'sold' OR p.payout_cents <> s.payout_cents"
        )
        orphans = await conn.fetchval(
            "SELECT count(*) FROM sales s WHERE NOT EXISTS"
            " (SELECT 1 FROM pings p WHERE p.ping_id = s.ping_id)"
        )
        per_hour = await conn.fetch(
            "SELECT buyer_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') AS hour,"
            " count(*) AS n FROM sales GROUP BY 1, 2"
        )
    finally:
        await conn.close()
    problems = list(f"told both sold and unsold / two prices: {p}" for p in told.contradictions)
    recorded = 0
    for ping_id, cents in told.sold.items():
        row = sales.get(ping_id)
        if row is None:
            problems.append(f"seller told sold, no sale row: {ping_id}")
        elif row["payout_cents"] != cents:
            problems.append(f"told {cents} c, sale row says {row['payout_cents']}: {ping_id}")
        else:
            recorded += row["payout_cents"]
    problems += [f"seller told unsold, sale row exists: {p}" for p in told.unsold if p in sales]
    problems += [f"sold twice: {r['ping_id']}" for r in twice]
    problems += [f"sale without a matching sold post: {r['ping_id']}" for r in disagreeing]
    for r in per_hour:
        cap = (hourly_caps or {}).get(r["buyer_id"])
        if cap is not None and r["n"] > cap:
            problems.append(f"{r['buyer_id']} sold {r['n']} in the hour {r['hour']}, cap {cap}")
    return LedgerFigures(
        sales=len(sales),
        sold_answers=len(told.sold),
        unsold_answers=len(told.unsold),
        payout_told_cents=sum(told.sold.values()),
        payout_recorded_cents=recorded,
        sales_nobody_was_told=len(set(sales) - set(told.sold)),
        sales_without_ping_row=orphans,
        problems=tuple(problems),
    )


async def table_dump(database_url: str) -> dict[str, bytes]:
    """Every row of every table of the ledger, as JSON text per table."""
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
        dump = {}
        for row in tables:
            name = row["tablename"]
            rows = await conn.fetch(f'SELECT * FROM "{name}"')
            dump[name] = orjson.dumps([dict(r) for r in rows], default=_text)
        return dump
    finally:
        await conn.close()


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


async def create_database(server_dsn: str) -> str:
    """A new empty database on that server; returns its URL."""
    import uuid

    from tests.support.harness import with_database

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return with_database(server_dsn, name)


@contextlib.contextmanager
def controlled_postgres() -> Iterator[ControlledPostgres]:
    server = ControlledPostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


async def until_answered(
    traffic: SellerTraffic, kind: str, body: dict[str, Any], give_up_s: float = 25
) -> Answer:
    """Retry 503s and dropped connections as a careful seller does (same body, so the same
    ping or external_id), honouring Retry-After up to half a second."""
    give_up = time.monotonic() + give_up_s
    while True:
        answer = await traffic.call(kind, body)
        if answer.status not in (503, None) or time.monotonic() > give_up:
            return answer
        await asyncio.sleep(min(float(answer.retry_after or 0.2), 0.5))


async def seller_loop(
    traffic: SellerTraffic, stop: asyncio.Event, name: str, pause_s: float
) -> None:
    """One seller until ``stop``: two ping-posts, then a direct post with an external_id."""
    for n in itertools.count():
        if stop.is_set():
            return
        if n % 3 == 2:
            body = {"vertical": "auto_insurance", "lead": FULL_LEAD, "external_id": f"{name}-{n}"}
            await until_answered(traffic, "leads", body)
        else:
            ping = await traffic.call("ping", {"vertical": "auto_insurance", "lead": PING_LEAD})
            if ping.status == 200 and ping.body["status"] == "bid":
                await until_answered(
                    traffic, "post", {"ping_id": ping.body["ping_id"], "lead": FULL_LEAD}
                )
        await asyncio.sleep(pause_s)
