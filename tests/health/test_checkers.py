"""One test group per checker kind, against real servers on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from pylvs.health.checkers import CHECKERS, CheckResult
from pylvs.health.checkers.base import Target
from pylvs.health.checkers.dns import build_query, judge_answer
from pylvs.health.checkers.http import parse_response
from pylvs.health.config.errors import Where
from pylvs.health.config.model import CheckerConf, UrlCheck
from tests.support import free_port

from .servers import HttpBackend, TcpBackend, dns_responder

LO = "127.0.0.1"


def probe(kind: str, port: int, timeout: float = 1.0, host: str = LO, **conf: object) -> CheckResult:
    c = CheckerConf(kind, Where("test", 0))
    for k, v in conf.items():
        setattr(c, k, v)
    checker = CHECKERS[kind](c, Target(ipaddress.ip_address(host), port, timeout, delay_loop=2.0))
    return asyncio.run(checker.check())


# -- TCP_CHECK -------------------------------------------------------------------------------


def test_tcp_check_connects_or_reports_refusal() -> None:
    port = free_port()

    async def go() -> tuple[CheckResult, CheckResult]:
        srv = await TcpBackend(LO, port).start()
        c = CHECKERS["TCP_CHECK"](
            CheckerConf("TCP_CHECK", Where("t", 0)), Target(ipaddress.ip_address(LO), port, 1.0)
        )
        up = await c.check()
        await srv.stop()
        down = await c.check()
        return up, down

    up, down = asyncio.run(go())
    assert up.ok and "succeeded" in up.reason
    assert not down.ok and "refused" in down.reason.lower()


# -- HTTP_GET --------------------------------------------------------------------------------


def http_probe(
    backend: HttpBackend, urls: list[UrlCheck], kind: str = "HTTP_GET", ssl_ctx: object = None, **conf: object
) -> CheckResult:
    async def go() -> CheckResult:
        await backend.start(ssl=ssl_ctx)
        try:
            c = CheckerConf(kind, Where("t", 0), urls=urls)
            for k, v in conf.items():
                setattr(c, k, v)
            t = Target(ipaddress.ip_address(backend.host), backend.port, 2.0, virtualhost="www.pylvs.test")
            return await CHECKERS[kind](c, t).check()
        finally:
            await backend.stop()

    return asyncio.run(go())


BODY = b"hello pylvs\n"
MD5 = hashlib.md5(BODY).hexdigest()


@pytest.mark.parametrize(
    ("status", "url", "ok", "why"),
    [
        (200, UrlCheck("/"), True, "as expected"),
        (200, UrlCheck("/", digest=MD5), True, "as expected"),
        (200, UrlCheck("/", digest="0" * 32), False, "digest"),
        (503, UrlCheck("/"), False, "status 503"),
        (404, UrlCheck("/", status_codes=((404, 404),)), True, "as expected"),
        (302, UrlCheck("/", status_codes=((200, 299), (300, 302))), True, "as expected"),
        (500, UrlCheck("/", digest=MD5), False, "status 500"),
    ],
)
def test_http_get_status_and_digest(status: int, url: UrlCheck, ok: bool, why: str) -> None:
    res = http_probe(HttpBackend(LO, free_port(), status=status, body=BODY), [url])
    assert res.ok is ok and why in res.reason


def test_http_get_sends_virtualhost_and_reads_chunked() -> None:
    be = HttpBackend(LO, free_port(), body=BODY, chunked=True)
    res = http_probe(be, [UrlCheck("/health", digest=MD5, virtualhost="app.pylvs.test")], http_protocol="1.1")
    assert res.ok, res.reason
    head = be.requests[0].decode()
    assert head.startswith("GET /health HTTP/1.1\r\n")
    assert "Host: app.pylvs.test\r\n" in head and "Connection: close" in head


def test_http_get_every_url_must_pass() -> None:
    be = HttpBackend(LO, free_port(), body=BODY)
    res = http_probe(be, [UrlCheck("/a", digest=MD5), UrlCheck("/b", digest="1" * 32)])
    assert not res.ok and "/b" in res.reason
    assert "Host: www.pylvs.test" in be.requests[0].decode()  # the inherited virtualhost


def test_http_get_times_out_on_a_silent_server() -> None:
    port = free_port()

    async def go() -> tuple[CheckResult, float]:
        async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await asyncio.sleep(5)
            w.close()

        srv = await asyncio.start_server(silent, LO, port)
        c = CheckerConf("HTTP_GET", Where("t", 0), urls=[UrlCheck("/")])
        t0 = time.monotonic()
        res = await CHECKERS["HTTP_GET"](c, Target(ipaddress.ip_address(LO), port, 0.3)).check()
        srv.close()
        return res, time.monotonic() - t0

    res, took = asyncio.run(go())
    assert not res.ok and "within 0.3s" in res.reason and took < 2


def test_parse_response_rejects_garbage() -> None:
    from pylvs.health.checkers.http import HttpProtocolError

    assert parse_response(b"HTTP/1.0 204 No\r\n\r\n") == (204, b"")
    with pytest.raises(HttpProtocolError):
        parse_response(b"SSH-2.0-OpenSSH\r\n\r\n")


# -- SSL_GET ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "k.pem", d / "c.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-days",
            "2",
            "-subj",
            "/CN=pylvs-test",
        ],
        check=True,
        capture_output=True,
    )
    return crt, key


def test_ssl_get_with_self_signed_certificate(self_signed: tuple[Path, Path]) -> None:
    crt, key = self_signed
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(crt), str(key))
    ok = http_probe(HttpBackend(LO, free_port(), body=BODY), [UrlCheck("/", digest=MD5)], "SSL_GET", ctx)
    assert ok.ok, ok.reason
    bad = http_probe(HttpBackend(LO, free_port(), body=b"other"), [UrlCheck("/", digest=MD5)], "SSL_GET", ctx)
    assert not bad.ok and "digest" in bad.reason
    sni = http_probe(
        HttpBackend(LO, free_port(), body=BODY), [UrlCheck("/")], "SSL_GET", ctx, enable_sni=True
    )
    assert sni.ok, sni.reason


def test_ssl_get_against_plain_http_fails_cleanly() -> None:
    res = http_probe(HttpBackend(LO, free_port(), body=BODY), [UrlCheck("/")], "SSL_GET")
    assert not res.ok and ("TLS" in res.reason or "SSL" in res.reason or "reset" in res.reason.lower()), (
        res.reason
    )


# -- MISC_CHECK ------------------------------------------------------------------------------


@pytest.fixture
def script(tmp_path: Path) -> Path:
    p = tmp_path / "exit.sh"
    p.write_text('#!/bin/sh\n[ -n "$2" ] && sleep "$2"\nexit "$1"\n')
    os.chmod(p, 0o755)
    return p


@pytest.mark.parametrize(
    ("code", "dynamic", "ok", "weight"),
    [
        (0, False, True, None),
        (1, False, False, None),
        (12, True, True, 10),
        (2, True, True, 0),
        (12, False, False, None),
        (1, True, False, None),
    ],
)
def test_misc_check_exit_codes(script: Path, code: int, dynamic: bool, ok: bool, weight: int | None) -> None:
    res = probe("MISC_CHECK", 0, misc_path=f"{script} {code}", misc_dynamic=dynamic)
    assert (res.ok, res.weight) == (ok, weight), res.reason


def test_misc_check_timeout_kills_the_script(script: Path) -> None:
    t0 = time.monotonic()
    res = probe("MISC_CHECK", 0, misc_path=f"{script} 0 5", misc_timeout=0.3)
    assert not res.ok and "did not finish" in res.reason
    assert time.monotonic() - t0 < 3


def test_misc_check_missing_program() -> None:
    res = probe("MISC_CHECK", 0, misc_path="/nonexistent/pylvs-check")
    assert not res.ok and "cannot run" in res.reason


# -- DNS_CHECK -------------------------------------------------------------------------------


def dns_probe(
    rcode: int | None, dns_type: str = "A", name: str = "pylvs.test"
) -> tuple[CheckResult, list[bytes]]:
    port = free_port(kind=__import__("socket").SOCK_DGRAM)

    async def go() -> tuple[CheckResult, list[bytes]]:
        transport = None
        queries: list[bytes] = []
        if rcode is not None:
            transport, proto = await dns_responder(LO, port, rcode)
            queries = proto.queries
        try:
            c = CheckerConf("DNS_CHECK", Where("t", 0), dns_type=dns_type, dns_name=name)
            return await CHECKERS["DNS_CHECK"](
                c, Target(ipaddress.ip_address(LO), port, 0.5)
            ).check(), queries
        finally:
            if transport is not None:
                transport.close()

    return asyncio.run(go())


def test_dns_check_noerror_answer() -> None:
    res, queries = dns_probe(0)
    assert res.ok, res.reason
    q = queries[0]
    assert q[12:] == b"\x05pylvs\x04test\x00\x00\x01\x00\x01"  # name, type A, class IN


def test_dns_check_nxdomain_and_silence() -> None:
    res, _ = dns_probe(3)
    assert not res.ok and "NXDOMAIN" in res.reason
    res, _ = dns_probe(None)
    assert not res.ok and ("no answer" in res.reason or "refused" in res.reason.lower())


def test_dns_check_root_soa_default_and_answer_checks() -> None:
    res, queries = dns_probe(0, "SOA", ".")
    assert res.ok and queries[0][12:] == b"\x00\x00\x06\x00\x01"
    q = build_query(0x1234, "a.b", "AAAA")
    assert judge_answer(q, q) == (False, "answer is not a response (QR clear)")
    resp = bytearray(q)
    resp[2] |= 0x80
    assert judge_answer(q, bytes(resp))[0]
    resp[0] ^= 1
    assert judge_answer(q, bytes(resp)) == (False, "answer id does not match")


def test_tcp_check_over_ipv6_loopback() -> None:
    import socket

    with socket.socket(socket.AF_INET6) as s:
        try:
            s.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback")
        s.listen(4)
        port = s.getsockname()[1]
        res = probe("TCP_CHECK", port, host="::1")
    assert res.ok and "[::1]" in res.reason


def test_http_get_does_not_wait_for_a_server_that_keeps_the_connection() -> None:
    port = free_port()

    async def go() -> tuple[CheckResult, float]:
        async def keepalive(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readuntil(b"\r\n\r\n")
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n" + BODY)
            await w.drain()
            await asyncio.sleep(3)  # never closes on its own
            w.close()

        srv = await asyncio.start_server(keepalive, LO, port)
        c = CheckerConf("HTTP_GET", Where("t", 0), urls=[UrlCheck("/", digest=MD5)])
        t0 = time.monotonic()
        res = await CHECKERS["HTTP_GET"](c, Target(ipaddress.ip_address(LO), port, 2.0)).check()
        took = time.monotonic() - t0
        srv.close()
        return res, took

    res, took = asyncio.run(go())
    assert res.ok and took < 1.0, (res, took)
