"""DNS_CHECK: one query over UDP; alive when the answer has our id, is a response and says NOERROR."""

from __future__ import annotations

import asyncio
import random
import socket
import struct

from pylvs.health.checkers.base import Checker, CheckResult, open_socket, os_reason

QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28}
RCODES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.strip(".").split("."):
        if not label:
            continue
        raw = label.encode("idna") if not label.isascii() else label.encode()
        if len(raw) > 63:
            raise ValueError(f"label {label!r} is longer than 63 bytes")
        out += bytes([len(raw)]) + raw
    return bytes(out + b"\0")


def build_query(qid: int, name: str, qtype: str) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # recursion desired, one question
    return header + encode_name(name) + struct.pack("!HH", QTYPES[qtype], 1)


def judge_answer(query: bytes, answer: bytes) -> tuple[bool, str]:
    """(usable, why) for an answer to `query`: same id and question, QR set, RCODE 0."""
    if len(answer) < 12:
        return False, "answer shorter than a DNS header"
    qid, flags = struct.unpack("!HH", answer[:4])
    if qid != struct.unpack("!H", query[:2])[0]:
        return False, "answer id does not match"
    if not flags & 0x8000:
        return False, "answer is not a response (QR clear)"
    rcode = flags & 0x000F
    if rcode:
        return False, f"server answered {RCODES.get(rcode, f'RCODE {rcode}')}"
    if answer[12 : len(query)].lower() != query[12:].lower():
        return False, "answer is for another question"
    return True, "answered NOERROR"


class DnsCheck(Checker):
    kind = "DNS_CHECK"

    async def check(self) -> CheckResult:
        t = self.target
        qtype = self.conf.dns_type
        try:
            query = build_query(random.getrandbits(16), self.conf.dns_name, qtype)
        except (ValueError, UnicodeError) as e:
            return CheckResult(False, f"DNS name {self.conf.dns_name!r}: {e}")
        loop = asyncio.get_running_loop()
        try:
            sock = open_socket(t, socket.SOCK_DGRAM)
        except OSError as e:
            return CheckResult(False, os_reason("cannot open a socket", e))
        what = f"DNS {qtype} {self.conf.dns_name} to {t.label()}"
        try:
            async with asyncio.timeout(t.timeout):
                await loop.sock_connect(sock, t.sockaddr())
                await loop.sock_sendall(sock, query)
                while True:  # skip stray datagrams until ours (or the timeout)
                    answer = await loop.sock_recv(sock, 4096)
                    ok, why = judge_answer(query, answer)
                    if ok or "id does not match" not in why:
                        return CheckResult(ok, f"{what}: {why}")
        except TimeoutError:
            return CheckResult(False, f"{what}: no answer within {t.timeout:g}s")
        except OSError as e:
            return CheckResult(False, os_reason(what, e))
        finally:
            sock.close()
