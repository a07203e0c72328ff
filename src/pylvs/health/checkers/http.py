"""HTTP_GET and SSL_GET: fetch each url; it passes when the status is expected and the body's MD5 matches.

Every url of the checker must pass. Each fetch is one connection, bounded as a whole by connect_timeout.
SSL_GET does not verify the server's certificate (as keepalived without an SSL block).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl

from pylvs.health.checkers.base import Checker, CheckResult, os_reason
from pylvs.health.config.model import UrlCheck

MAX_BODY = 1 << 20  # read at most this much of a body


class HttpProtocolError(Exception):
    pass


def parse_response(data: bytes) -> tuple[int, bytes]:
    """(status code, body) of a complete HTTP/1.x response; chunked bodies are decoded."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise HttpProtocolError("response ends before its headers do")
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise HttpProtocolError(f"not an HTTP status line: {lines[0][:60]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = _dechunk(body)
    elif b"content-length" in headers:
        try:
            body = body[: int(headers[b"content-length"])]
        except ValueError:
            raise HttpProtocolError("bad Content-Length") from None
    return int(parts[1]), body


def _complete(buf: bytearray) -> bool:
    """Whether `buf` holds a whole response by its Content-Length or final chunk (else: read to EOF)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = bytes(buf[:end]).lower()
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip()
        if name == b"content-length" and value.strip().isdigit():
            return len(buf) - end - 4 >= int(value)
        if name == b"transfer-encoding" and b"chunked" in value:
            return buf.endswith(b"0\r\n\r\n")
    return False


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        if not sep:
            raise HttpProtocolError("truncated chunked body")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            raise HttpProtocolError("bad chunk size") from None
        if size == 0:
            return bytes(out)
        out += data[:size]
        data = data[size + 2 :]


class HttpGet(Checker):
    kind = "HTTP_GET"
    use_tls = False

    def _ssl(self) -> ssl.SSLContext | None:
        if not self.use_tls:
            return None
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _host(self, url: UrlCheck) -> str:
        return url.virtualhost or self.target.virtualhost or self.target.label()

    def request(self, url: UrlCheck) -> bytes:
        version = "1.1" if self.conf.http_protocol == "1.1" else "1.0"
        lines = [
            f"GET {url.path} HTTP/{version}",
            "User-Agent: pylvs-health",
            f"Host: {self._host(url)}",
        ]
        if self.conf.http_protocol in ("1.0C", "1.1"):
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _fetch(self, url: UrlCheck) -> tuple[int, bytes]:
        t = self.target
        ctx = self._ssl()
        kwargs: dict[str, object] = {}
        if ctx is not None:
            sni = self.conf.sni_name or self._host(url) if self.conf.enable_sni else ""
            kwargs = {"ssl": ctx, "server_hostname": sni}
        if t.bindto is not None or t.bind_port:
            kwargs["local_addr"] = (str(t.bindto) if t.bindto else "", t.bind_port or 0)
        reader, writer = await asyncio.open_connection(str(t.addr), t.port, **kwargs)  # type: ignore[arg-type]
        try:
            writer.write(self.request(url))
            await writer.drain()
            buf = bytearray()
            while len(buf) < MAX_BODY + 65536:
                data = await reader.read(65536)
                if not data:
                    break
                buf += data
                if _complete(buf):  # a server that keeps the connection open: stop at the body's end
                    break
            return parse_response(bytes(buf))
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass

    async def check(self) -> CheckResult:
        t = self.target
        for url in self.conf.urls:
            where = f"{self.kind} {t.label()}{url.path}"
            try:
                async with asyncio.timeout(t.timeout):
                    code, body = await self._fetch(url)
            except TimeoutError:
                return CheckResult(False, f"{where}: no complete answer within {t.timeout:g}s")
            except ssl.SSLError as e:
                return CheckResult(False, f"{where}: TLS error: {e.reason or e}")
            except OSError as e:
                return CheckResult(False, os_reason(where, e))
            except HttpProtocolError as e:
                return CheckResult(False, f"{where}: {e}")
            if not url.status_ok(code):
                return CheckResult(False, f"{where}: status {code} is not expected")
            if url.digest is not None:
                got = hashlib.md5(body, usedforsecurity=False).hexdigest()
                if got != url.digest:
                    return CheckResult(False, f"{where}: body digest {got} differs from {url.digest}")
        return CheckResult(True, f"{self.kind} {t.label()}: {len(self.conf.urls)} url(s) as expected")


class SslGet(HttpGet):
    kind = "SSL_GET"
    use_tls = True
