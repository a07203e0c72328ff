#!/usr/bin/env python3
"""Oracle helper (runs inside the VM): a UDP real server that answers with its name, or a client that
sends one SIP-like datagram per line of its arguments and prints which server answered.

    sip_udp.py serve NAME ADDR PORT
    sip_udp.py send VIP PORT LABEL:SRC:SPORT:CALLID ...   (CALLID '-' = no Call-ID header,
                                                          'i=X' = compact header 'i: X')
"""

import socket
import sys


def serve(name: str, addr: str, port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    while True:
        _, peer = s.recvfrom(4096)
        s.sendto(name.encode(), peer)


def payload(callid: str) -> bytes:
    lines = ["INVITE sip:bob@example.com SIP/2.0", "Via: SIP/2.0/UDP client"]
    if callid.startswith("i="):
        lines.append(f"i: {callid[2:]}")
    elif callid != "-":
        lines.append(f"Call-ID: {callid}")
    lines += ["CSeq: 1 INVITE", "", ""]
    return "\r\n".join(lines).encode()


def send(vip: str, port: int, specs: list[str]) -> None:
    for spec in specs:
        label, src, sport, callid = spec.split(":", 3)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((src, int(sport)))
        s.settimeout(1.0)
        s.sendto(payload(callid), (vip, port))
        try:
            data, _ = s.recvfrom(4096)
            answer = data.decode()
        except TimeoutError:
            answer = "none"
        s.close()
        print(f"{label} {src}:{sport} callid={callid} -> {answer}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        send(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
