#!/usr/bin/env python3
"""The real servers of the keepalived oracle lab (stdlib only: runs in the oracle VM and in our tests).

Run inside the "rs" network namespace, which holds 192.168.201.10-13 and .20:
  .10:80 HTTP   .11:80 HTTP   .11:443 HTTPS (lab.crt/lab.key)   .12:3306 TCP accept
  .10:53 DNS (UDP, answers A queries)   .20:80 HTTP (the sorry server)
.13 exists but listens on nothing (connections are refused); .14 does not exist at all.

  python3 lab_servers.py DIR [PREFIX]     (PREFIX defaults to 192.168.201)
"""

from __future__ import annotations

import http.server
import socket
import ssl
import struct
import sys
import threading

PAGE = b"pylvs lab page\n"  # MD5 d342e6b49983bcabbac99c3d02907a08


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path in ("/", "/index.html", "/health"):
            code, body = 200, PAGE
        else:
            code, body = 404, b"not here\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def http_server(addr: str, port: int, tls_dir: str | None = None) -> None:
    srv = http.server.ThreadingHTTPServer((addr, port), Handler)
    if tls_dir:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(f"{tls_dir}/lab.crt", f"{tls_dir}/lab.key")
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()


def tcp_server(addr: str, port: int) -> None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)

    def loop() -> None:
        while True:
            c, _ = s.accept()
            c.close()

    threading.Thread(target=loop, daemon=True).start()


def dns_server(addr: str, port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))

    def loop() -> None:
        while True:
            q, peer = s.recvfrom(512)
            if len(q) < 12:
                continue
            qid = q[:2]
            end = 12
            while q[end] != 0:
                end += q[end] + 1
            question = q[12 : end + 5]
            answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("10.0.0.1")
            header = qid + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
            s.sendto(header + question + answer, peer)

    threading.Thread(target=loop, daemon=True).start()


def main() -> None:
    tls_dir = sys.argv[1]
    p = sys.argv[2] if len(sys.argv) > 2 else "192.168.201"
    http_server(f"{p}.10", 80)
    http_server(f"{p}.11", 80)
    http_server(f"{p}.11", 443, tls_dir)
    http_server(f"{p}.20", 80)
    tcp_server(f"{p}.12", 3306)
    dns_server(f"{p}.10", 53)
    print("lab ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
