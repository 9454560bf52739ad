"""The buyer transport against real loopback servers: an aiohttp.web app for good
behaviour, raw asyncio servers for the misbehaviour an aiohttp server won't produce.

Tests taking `transport` pin the `Transport` contract; `h1` tests pin what H1Transport
promises beyond it (connection accounting, stale-connection retry, idle expiry). How a
buyer's connections are kept apart from other buyers' is in test_buyer_connections.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import shutil
import socket
import ssl
import subprocess
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from buyers.adapter import HttpRequest
from exchange.transport.base import Transport, TransportError, TransportTimeout
from exchange.transport.h1 import H1Transport

LIMIT_BYTES = 4096
BUYER = "buyer-a"
StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def post(url: str, body: bytes = b'{"ping": 1}', *headers: tuple[str, str]) -> HttpRequest:
    return HttpRequest("POST", url, (("Content-Type", "application/json"), *headers), body)


# ---- the well-behaved server -------------------------------------------------------


async def echo(request: web.Request) -> web.Response:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return web.Response(
        body=await request.read(),
        headers={
            "X-Peer-Port": str(peer[1] if peer else 0),
            "X-Seen-Signature": request.headers.get("X-Signature", ""),
            "X-Custom-Thing": "Value",
        },
    )


async def chunked(request: web.Request) -> web.StreamResponse:
    size = int(request.query.get("n", "0"))
    parts = [b"x" * 1000] * (size // 1000) if size else [b"alpha-", b"beta-", b"gamma"]
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for part in parts:
        await response.write(part)
    await response.write_eof()
    return response


async def big(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * int(request.query["n"]))


async def redirect(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/echo"})


def app() -> web.Application:
    application = web.Application()
    application.router.add_post("/echo", echo)
    application.router.add_post("/chunked", chunked)
    application.router.add_post("/big", big)
    application.router.add_post("/redirect", redirect)
    return application


@contextlib.asynccontextmanager
async def app_server(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    runner = web.AppRunner(app(), shutdown_timeout=0.5)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def base_url() -> AsyncIterator[str]:
    async with app_server() as url:
        yield url


# ---- raw servers for misbehaviour ----------------------------------------------------


@contextlib.asynccontextmanager
async def raw_server(handle: StreamHandler) -> AsyncIterator[str]:
    """Serve each connection with `handle`; every handler is cancelled on exit."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handle(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the test is over
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/buyer"
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# ---- transports --------------------------------------------------------------------


@pytest.fixture
async def transport() -> AsyncIterator[Transport]:
    chosen: Transport = H1Transport(max_response_bytes=LIMIT_BYTES)
    yield chosen
    await chosen.close()


@pytest.fixture
async def h1() -> AsyncIterator[H1Transport]:
    chosen = H1Transport(max_response_bytes=LIMIT_BYTES)
    yield chosen
    await chosen.close()


# ---- the shared contract -------------------------------------------------------------


async def test_content_length_body_and_headers_round_trip(
    transport: Transport, base_url: str
) -> None:
    request = post(f"{base_url}/echo", b'{"bid": 125}', ("X-Signature", "abc123"))
    response = await transport.send(request, 2.0, buyer=BUYER)
    assert response.status == 200
    assert response.body == b'{"bid": 125}'
    assert response.headers["x-seen-signature"] == "abc123"
    assert response.headers["x-custom-thing"] == "Value"
    assert response.headers["content-length"] == "12"


async def test_chunked_body_is_joined(transport: Transport, base_url: str) -> None:
    response = await transport.send(post(f"{base_url}/chunked"), 2.0, buyer=BUYER)
    assert response.status == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.body == b"alpha-beta-gamma"


async def test_body_without_length_is_read_until_close(transport: Transport) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"close")

    async with raw_server(handle) as url:
        response = await transport.send(post(url), 2.0, buyer=BUYER)
    assert (response.status, response.body) == (200, b"until close")


async def test_keep_alive_reuses_one_connection(transport: Transport, base_url: str) -> None:
    ports = set()
    for _ in range(50):
        response = await transport.send(post(f"{base_url}/echo"), 2.0, buyer=BUYER)
        ports.add(response.headers["x-peer-port"])
    assert len(ports) == 1
    assert transport.stats.connections_opened == 1
    assert transport.stats.requests_sent == 50


async def test_concurrent_requests_to_one_host_get_their_own_answers(
    transport: Transport, base_url: str
) -> None:
    bodies = [f'{{"n": {n}}}'.encode() for n in range(20)]
    responses = await asyncio.gather(
        *(transport.send(post(f"{base_url}/echo", body), 2.0, buyer=BUYER) for body in bodies)
    )
    assert [r.body for r in responses] == bodies


async def test_redirect_is_returned_not_followed(transport: Transport, base_url: str) -> None:
    response = await transport.send(post(f"{base_url}/redirect"), 2.0, buyer=BUYER)
    assert response.status == 302
    assert response.headers["location"] == "/echo"


@pytest.mark.parametrize("path", ["big", "chunked"])
async def test_body_over_the_cap_fails_and_next_request_works(
    transport: Transport, base_url: str, path: str
) -> None:
    with pytest.raises(TransportError, match="too large"):
        await transport.send(post(f"{base_url}/{path}?n={LIMIT_BYTES + 1000}"), 2.0, buyer=BUYER)
    ok = await transport.send(post(f"{base_url}/{path}?n=3000"), 2.0, buyer=BUYER)
    assert ok.body == b"x" * 3000


async def test_body_at_the_cap_is_accepted(transport: Transport, base_url: str) -> None:
    response = await transport.send(post(f"{base_url}/big?n={LIMIT_BYTES}"), 2.0, buyer=BUYER)
    assert len(response.body) == LIMIT_BYTES


async def test_hanging_server_times_out(transport: Transport) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(60)

    async with raw_server(handle) as url:
        started = time.monotonic()
        with pytest.raises(TransportTimeout):
            await transport.send(post(url), 0.2, buyer=BUYER)
        assert time.monotonic() - started < 1.0


async def test_drip_feeding_server_times_out(transport: Transport) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        while True:
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.03)

    async with raw_server(handle) as url:
        started = time.monotonic()
        with pytest.raises(TransportTimeout):
            await transport.send(post(url), 0.3, buyer=BUYER)
        assert time.monotonic() - started < 1.0


async def test_cancelling_a_request_closes_its_connection(transport: Transport) -> None:
    got_request, saw_close = asyncio.Event(), asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        got_request.set()
        with contextlib.suppress(ConnectionError):
            await reader.read()
        saw_close.set()

    async with raw_server(handle) as url:
        task = asyncio.create_task(transport.send(post(url), 5.0, buyer=BUYER))
        await asyncio.wait_for(got_request.wait(), 2.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(saw_close.wait(), 1.0)


async def test_server_closing_idle_connection_then_next_request_succeeds(
    transport: Transport,
) -> None:
    answered = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK_RESPONSE)
        await writer.drain()
        answered.set()  # and close: keep-alive was offered, then withdrawn

    async with raw_server(handle) as url:
        assert (await transport.send(post(url), 2.0, buyer=BUYER)).body == b"ok"
        await answered.wait()
        await asyncio.sleep(0.05)
        assert (await transport.send(post(url), 2.0, buyer=BUYER)).body == b"ok"


async def test_fresh_connection_closed_without_answer_fails(transport: Transport) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with raw_server(handle) as url:
        with pytest.raises(TransportError):
            await transport.send(post(url), 2.0, buyer=BUYER)


async def test_connection_refused_is_transport_error(transport: Transport) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransportError) as caught:
        await transport.send(post(f"http://127.0.0.1:{port}/"), 2.0, buyer=BUYER)
    assert not isinstance(caught.value, TransportTimeout)


@pytest.mark.parametrize(
    "answer",
    [
        b"SPROING nonsense\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: banana\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnope\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n",
    ],
    ids=["not-http", "bad-length", "bad-chunk", "huge-header"],
)
async def test_garbage_response_is_transport_error(transport: Transport, answer: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(60)  # stay open: the parse error alone must end the request

    async with raw_server(handle) as url:
        with pytest.raises(TransportError) as caught:
            await transport.send(post(url), 2.0, buyer=BUYER)
    assert not isinstance(caught.value, TransportTimeout)


async def test_header_with_line_break_is_refused(transport: Transport, base_url: str) -> None:
    smuggled = post(f"{base_url}/echo", b"{}", ("X-Signature", "a\r\nX-Admin: yes"))
    with pytest.raises(TransportError):
        await transport.send(smuggled, 2.0, buyer=BUYER)


# ---- TLS -------------------------------------------------------------------------------


CA_CONFIG = """[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = lead-exchange test CA
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""
LEAF_EXTENSIONS = """basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA and a 127.0.0.1 server certificate it signed, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available")
    folder = tmp_path_factory.mktemp("tls")
    (folder / "ca.cnf").write_text(CA_CONFIG)
    (folder / "leaf.cnf").write_text(LEAF_EXTENSIONS)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    sign = ["-set_serial", "2", "-days", "2", "-extfile", "leaf.cnf", "-out", "leaf.pem"]
    for command in (
        ["req", "-x509", "-config", "ca.cnf", *ec, "-keyout", "ca.key", "-out", "ca.pem"],
        ["req", "-new", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", *sign],
    ):
        subprocess.run(["openssl", *command], cwd=folder, check=True, capture_output=True)
    return folder


@pytest.fixture(scope="module")
async def tls_url(certificates: Path) -> AsyncIterator[str]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certificates / "leaf.pem", certificates / "leaf.key")
    async with app_server(server_context) as url:
        yield url


async def test_tls_with_trusted_ca_reuses_connection(certificates: Path, tls_url: str) -> None:
    trusting = ssl.create_default_context(cafile=certificates / "ca.pem")
    transport = H1Transport(max_response_bytes=LIMIT_BYTES, ssl_context=trusting)
    try:
        for _ in range(10):
            response = await transport.send(post(f"{tls_url}/echo", b"secret"), 2.0, buyer=BUYER)
            assert response.body == b"secret"
        chunked_response = await transport.send(post(f"{tls_url}/chunked"), 2.0, buyer=BUYER)
        assert chunked_response.body == b"alpha-beta-gamma"
        assert transport.stats.connections_opened == 1
    finally:
        await transport.close()


async def test_tls_with_untrusted_certificate_fails(transport: Transport, tls_url: str) -> None:
    with pytest.raises(TransportError):
        await transport.send(post(f"{tls_url}/echo"), 2.0, buyer=BUYER)


# ---- H1Transport only ------------------------------------------------------------------


async def test_stale_reused_connection_is_retried_once_on_a_new_one(h1: H1Transport) -> None:
    requests_seen = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests_seen
        for turn in range(2):
            await read_request(reader)
            requests_seen += 1
            if turn == 1:
                return  # the second request on a connection: drop it unanswered
            writer.write(OK_RESPONSE)
            await writer.drain()

    async with raw_server(handle) as url:
        await h1.send(post(url), 2.0, buyer=BUYER)
        response = await h1.send(post(url), 2.0, buyer=BUYER)
    assert response.body == b"ok"
    assert h1.stats.stale_retries == 1
    assert h1.stats.connections_opened == 2
    assert requests_seen == 3  # the documented cost: the server saw the request twice


async def test_reused_connection_failing_mid_response_is_not_retried(h1: H1Transport) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK_RESPONSE)
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Len")
        await writer.drain()

    async with raw_server(handle) as url:
        await h1.send(post(url), 2.0, buyer=BUYER)
        with pytest.raises(TransportError):
            await h1.send(post(url), 2.0, buyer=BUYER)
    assert h1.stats.stale_retries == 0
    assert h1.stats.connections_opened == 1


async def test_connection_close_header_stops_reuse(h1: H1Transport) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(60)  # the client, not the server, must end it

    async with raw_server(handle) as url:
        for _ in range(3):
            assert (await h1.send(post(url), 2.0, buyer=BUYER)).body == b"ok"
    assert h1.stats.connections_opened == 3


async def test_failed_request_never_returns_its_connection(h1: H1Transport, base_url: str) -> None:
    with pytest.raises(TransportError):
        await h1.send(post(f"{base_url}/chunked?n={LIMIT_BYTES + 1000}"), 2.0, buyer=BUYER)
    await h1.send(post(f"{base_url}/echo"), 2.0, buyer=BUYER)
    await h1.send(post(f"{base_url}/echo"), 2.0, buyer=BUYER)
    assert h1.stats.connections_opened == 2


async def test_idle_connections_expire(base_url: str) -> None:
    transport = H1Transport(idle_timeout_s=0.05)
    try:
        await transport.send(post(f"{base_url}/echo"), 2.0, buyer=BUYER)
        await transport.send(post(f"{base_url}/echo"), 2.0, buyer=BUYER)
        await asyncio.sleep(0.2)
        await transport.send(post(f"{base_url}/echo"), 2.0, buyer=BUYER)
        assert transport.stats.connections_opened == 2
    finally:
        await transport.close()


async def test_idle_pool_is_capped_per_host(base_url: str) -> None:
    transport = H1Transport(max_idle_per_host=1)

    async def burst() -> None:
        await asyncio.gather(
            *(transport.send(post(f"{base_url}/echo"), 2.0, buyer=BUYER) for _ in range(3))
        )

    try:
        await burst()
        assert transport.stats.connections_opened == 3
        await burst()  # one kept idle, two more opened
        assert transport.stats.connections_opened == 5
    finally:
        await transport.close()


async def test_too_many_response_headers_fail(h1: H1Transport) -> None:
    many = b"".join(b"X-H%d: v\r\n" % n for n in range(150))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n" + many + b"Content-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(60)

    async with raw_server(handle) as url:
        with pytest.raises(TransportError, match="too many"):
            await h1.send(post(url), 2.0, buyer=BUYER)


async def test_interim_response_is_skipped(h1: H1Transport) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + OK_RESPONSE)
        await writer.drain()
        await asyncio.sleep(60)

    async with raw_server(handle) as url:
        response = await h1.send(post(url), 2.0, buyer=BUYER)
    assert (response.status, response.body) == (200, b"ok")


async def test_url_is_escaped_and_host_header_written(h1: H1Transport) -> None:
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await read_request(reader))
        writer.write(OK_RESPONSE)
        await writer.drain()
        await asyncio.sleep(60)

    async with raw_server(handle) as url:
        await h1.send(
            post(f"{url} me?q=a b#frag", b"{}", ("Content-Length", "999")), 2.0, buyer=BUYER
        )
    port = url.split(":")[2].split("/")[0]
    assert heads[0].startswith(b"POST /buyer%20me?q=a%20b HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{port}\r\n".encode() in heads[0]
    assert heads[0].count(b"Content-Length") == 1
    assert heads[0].endswith(b"Content-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")


async def test_send_after_close_fails(base_url: str) -> None:
    transport = H1Transport()
    await transport.close()
    with pytest.raises(TransportError, match="closed"):
        await transport.send(post(f"{base_url}/echo"), 2.0, buyer=BUYER)


@pytest.mark.parametrize("url", ["ftp://example.com/", "/relative", "http://:80/"])
async def test_unusable_url_fails(h1: H1Transport, url: str) -> None:
    with pytest.raises(TransportError):
        await h1.send(post(url), 2.0, buyer=BUYER)


async def test_started_requests_settle_by_their_shared_deadline(
    transport: Transport, base_url: str
) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(60)

    loop = asyncio.get_running_loop()
    async with raw_server(handle) as hanging_url:
        deadline = loop.time() + 0.3
        fast = [
            transport.start(post(f"{base_url}/echo", b"%d" % n), deadline, buyer=BUYER)
            for n in range(5)
        ]
        slow = [transport.start(post(hanging_url), deadline, buyer=BUYER) for _ in range(3)]
        await asyncio.wait([*fast, *slow])
        settled_at = loop.time()
    assert [(await f).body for f in fast] == [b"%d" % n for n in range(5)]
    assert all(isinstance(f.exception(), TransportTimeout) for f in slow)
    assert settled_at - deadline < 0.1


async def test_a_deadline_whose_requests_all_settled_holds_no_timer(
    h1: H1Transport, base_url: str
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    answered = [
        h1.start(post(f"{base_url}/echo", b"%d" % n), deadline, buyer=BUYER) for n in range(5)
    ]
    assert [(await f).body for f in answered] == [b"%d" % n for n in range(5)]
    # Let go at once, not 30 s later: the group's timer is cancelled with its last request.
    assert h1._deadlines._groups == {}


async def test_starting_an_unusable_request_fails_its_future_not_the_caller(
    transport: Transport,
) -> None:
    future = transport.start(
        post("ftp://example.com/"), asyncio.get_running_loop().time() + 1, buyer=BUYER
    )
    with pytest.raises(TransportError):
        await future


async def test_late_answer_is_drained_and_its_connection_reused(h1: H1Transport) -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        await asyncio.sleep(0.3)  # past the client's deadline
        writer.write(OK_RESPONSE)
        await writer.drain()
        await read_request(reader)
        writer.write(OK_RESPONSE)
        await writer.drain()
        await asyncio.sleep(60)

    async with raw_server(handle) as url:
        with pytest.raises(TransportTimeout):
            await h1.send(post(url), 0.1, buyer=BUYER)
        await asyncio.sleep(0.4)
        assert (await h1.send(post(url), 1.0, buyer=BUYER)).body == b"ok"
    assert (connections, h1.stats.connections_opened) == (1, 1)
    assert (h1.stats.drained, h1.stats.drain_expired) == (1, 0)


async def test_a_late_answer_is_handed_to_the_caller_after_its_timeout(h1: H1Transport) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(0.2)  # past the client's deadline
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{"accepted":true}')
        await writer.drain()
        await asyncio.sleep(60)

    late: list[bytes] = []
    async with raw_server(handle) as url:
        with pytest.raises(TransportTimeout):
            await h1.send(post(url), 0.05, lambda response: late.append(response.body), buyer=BUYER)
        assert late == []  # the caller heard "timeout" first
        await asyncio.sleep(0.3)
    assert late == [b'{"accepted":true}']


async def test_answer_that_never_comes_drops_the_connection_after_the_drain() -> None:
    saw_close = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        with contextlib.suppress(ConnectionError):
            await reader.read()
        saw_close.set()

    transport = H1Transport(drain_s=0.2)
    try:
        async with raw_server(handle) as url:
            started = time.monotonic()
            with pytest.raises(TransportTimeout):
                await transport.send(post(url), 0.1, buyer=BUYER)
            assert time.monotonic() - started < 0.2
            await asyncio.wait_for(saw_close.wait(), 2.0)
            assert time.monotonic() - started >= 0.25
        assert transport.stats.drain_expired == 1
    finally:
        await transport.close()


async def test_draining_is_capped_per_host() -> None:
    closed = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal closed
        await read_request(reader)
        with contextlib.suppress(ConnectionError):
            await reader.read()
        closed += 1

    transport = H1Transport(max_idle_per_host=2, drain_s=30)
    try:
        async with raw_server(handle) as url:
            deadline = asyncio.get_running_loop().time() + 0.1
            futures = [transport.start(post(url), deadline, buyer=BUYER) for _ in range(5)]
            await asyncio.wait(futures)
            await asyncio.sleep(0.2)
            assert closed == 3  # two drain, the rest are dropped at the deadline
    finally:
        await transport.close()


async def test_a_dropped_connection_is_freed_without_the_cyclic_garbage_collector() -> None:
    """A hanging buyer costs a connection per timed-out request: each must be freed as
    soon as it is dropped, not left in reference cycles for a collection that pauses the
    event loop (which is when auctions with hanging buyers can least afford one)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        with contextlib.suppress(ConnectionError):
            await reader.read()

    loop = asyncio.get_running_loop()
    transport = H1Transport(drain_s=0.0)
    dropped: list[weakref.ref[object]] = []
    try:
        async with raw_server(handle) as url:
            gc.collect()
            gc.disable()
            try:
                for _ in range(5):
                    future = transport.start(post(url), loop.time() + 0.05, buyer=BUYER)
                    await asyncio.sleep(0.02)  # connected and sent
                    dropped.extend(weakref.ref(c) for c in transport._connections)
                    await asyncio.wait([future])
                    assert isinstance(future.exception(), TransportTimeout)
                    del future
                await asyncio.sleep(0.05)  # every connection_lost has run
                assert len(dropped) == 5
                assert [ref() for ref in dropped] == [None] * 5
            finally:
                gc.enable()
    finally:
        await transport.close()
