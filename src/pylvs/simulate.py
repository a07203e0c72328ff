"""`pylvs simulate`: the core driven by an event file, one result line per event (issue 3's contract).

Events (one per line; blank lines and `#` comments are ignored):

    -A -t 10.0.0.1:80 -s rr         an ipvsadm command line without the program name, applied now
    time T                          the clock, seconds from the start (never decreasing)
    open ID tcp|udp|sctp CLIENT:PORT VIP:PORT [mark N] [callid X]
                                    a new connection; prints `ID RIP:PORT` or `ID none`
                                    (callid, udp only: the datagram is a SIP request with
                                    `Call-ID: X`, for services with `--pe sip`)
    close ID                        orderly close (TCP; nothing for UDP)
    reset ID                        the client sends RST (TCP)
    list                            prints `ipvsadm -Ln` for the current state

Which packets an event stands for (what the director sees):

* NAT (-m) and FULLNAT servers, whose replies cross the director:
  TCP open = client SYN, server SYN+ACK, client ACK, the server's first data, the client's ACK
  (ESTABLISHED); close = client FIN, server ACK, server FIN, client ACK (TIME_WAIT);
  UDP open = one datagram and one reply.
* Direct routing (-g) and tunnel (-i) servers answer the client directly, so the director sees only
  the client's side: TCP open = SYN, ACK, ACK (INPUT_ONLY table: ESTABLISHED); close = FIN, ACK
  (FIN_WAIT); UDP open = one datagram. The printed server is the one the packets were sent to.
  With `--dr-replies` their replies cross the director instead (it is the real servers' gateway, as
  in the oracle's lab): the kernel then finds the entry by the reply from VIP:port, counts it and
  applies the OUTPUT table, so the packets and states are those of NAT (close ends in TIME_WAIT).
* reset = one client RST (+ACK) for either method (CLOSE).

This is what `../shared/oracle/guest/kernel_sim.py` plays through the real kernel (with NAT real
servers) and the outputs must match line for line. A rule line that ipvsadm rejects prints ipvsadm's
message (on standard output, as part of the result) and stops the run with exit status 1; a malformed
event line prints a message on standard error and exits with status 2.
"""

from __future__ import annotations

import ipaddress
import random
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TextIO

from pylvs.core.conn import Connection
from pylvs.core.director import Director
from pylvs.core.packet import Action
from pylvs.core.types import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Fwd, IPAddr, Packet, Proto

PROTOS = {"tcp": Proto.TCP, "udp": Proto.UDP, "sctp": Proto.SCTP}
PSH = 0x08

# SCTP chunk types used for the synthetic association
INIT, INIT_ACK, COOKIE_ECHO, COOKIE_ACK, SHUTDOWN, SHUTDOWN_ACK, SHUTDOWN_COMPLETE, ABORT, DATA = (
    1,
    2,
    10,
    11,
    7,
    8,
    14,
    6,
    0,
)

# IP packet lengths of the synthetic packets (only the byte counters see them)
TCP_HDR = 52
UDP_HDR = 28
SCTP_HDR = 48


class SimError(Exception):
    """A malformed event line."""


@dataclass(slots=True)
class Flow:
    """An open connection of the event file, as its client knows it."""

    proto: Proto
    caddr: IPAddr
    cport: int
    vaddr: IPAddr
    vport: int
    mark: int
    raddr: IPAddr
    rport: int
    replies: bool  # the server's replies cross the director (NAT, FULLNAT; DR/TUN with --dr-replies)
    oaddr: IPAddr  # where replies come from: the real server (NAT) or the virtual address (DR, TUN)
    oport: int

    payload: bytes = b""  # the first datagram's payload (only with `callid`)

    def inbound(self, flags: int = 0, length: int = TCP_HDR, chunk: int = -1) -> Packet:
        return Packet(
            self.proto, self.caddr, self.cport, self.vaddr, self.vport, self.mark, length, flags, chunk
        )

    def outbound(self, flags: int = 0, length: int = TCP_HDR, chunk: int = -1) -> Packet:
        return Packet(self.proto, self.oaddr, self.oport, self.caddr, self.cport, 0, length, flags, chunk)


def parse_hostport(text: str) -> tuple[IPAddr, int]:
    """`a.b.c.d:port` or `[v6]:port`."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise SimError(f"address:port expected, not {text!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise SimError(f"bad IPv6 address in {text!r}")
        host = host[1:-1]
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise SimError(f"bad address {host!r}") from None
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SimError(f"bad port in {text!r}")
    return addr, int(port)


def sip_request(target: str, callid: str) -> bytes:
    """A minimal SIP request carrying `callid` (what `open ... callid X` sends)."""
    return f"OPTIONS sip:{target} SIP/2.0\r\nCall-ID: {callid}\r\n\r\n".encode("utf-8", "replace")


def format_hostport(addr: IPAddr, port: int) -> str:
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


class Simulation:
    """Plays event lines against one Director; results go to `out`."""

    def __init__(
        self, out: TextIO, log: TextIO | None = None, seed: int = 0, dr_replies: bool = False
    ) -> None:
        from pylvs.ipvsadm.backend import LocalBackend  # the ipvsadm front end's in-process backend

        self.out = out
        self.dr_replies = dr_replies
        self.now = 0.0
        self.director = Director(rng=random.Random(seed))
        if log is not None:
            self.director.log = lambda text: print(f"[{self.now:g}] {text}", file=log)
        self.backend = LocalBackend(self.director, lambda: self.now, interfaces=lambda: {"lo", "eth0"})
        self.flows: dict[str, Flow] = {}

    # -- driving -----------------------------------------------------------------------------------
    def run(self, lines: Iterable[str]) -> int:
        for lineno, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                rc = self.event(line)
            except SimError as e:
                self.out.flush()
                print(f"pylvs simulate: line {lineno}: {e}", file=sys.stderr)
                return 2
            if rc:
                return rc
        return 0

    def event(self, line: str) -> int:
        try:
            words = shlex.split(line)
        except ValueError as e:
            raise SimError(f"cannot split {line!r}: {e}") from None
        if words[0].startswith("-"):
            return self.rule(words)
        verb, args = words[0], words[1:]
        if verb == "time":
            self.time(args)
        elif verb == "list":
            if args:
                raise SimError("list takes no arguments")
            self.show_list()
        elif verb == "open":
            self.open(args)
        elif verb == "close":
            self.close(args)
        elif verb == "reset":
            self.reset(args)
        else:
            raise SimError(f"unknown event {verb!r}")
        return 0

    # -- events ------------------------------------------------------------------------------------
    def rule(self, argv: list[str]) -> int:
        from pylvs.ipvsadm.run import run_ipvsadm

        self.director.advance(self.now)
        res = run_ipvsadm(self.backend, argv, prog="ipvsadm")
        if res.code:
            self.out.write(res.err)
            return 1
        return 0

    def show_list(self) -> None:
        from pylvs.ipvsadm.run import run_ipvsadm

        self.director.tick(self.now)
        res = run_ipvsadm(self.backend, ["-Ln"], prog="ipvsadm")
        self.out.write(res.out)

    def time(self, args: list[str]) -> None:
        if len(args) != 1:
            raise SimError("time takes one value (seconds from the start)")
        try:
            t = float(args[0])
        except ValueError:
            raise SimError(f"bad time {args[0]!r}") from None
        if not t >= self.now or t != t or t == float("inf"):
            raise SimError(f"time {args[0]} is before the current time {self.now:g}")
        self.now = t
        self.director.tick(t)

    def open(self, args: list[str]) -> None:
        callid = ""
        if len(args) in (6, 8) and args[-2] == "callid":
            callid = args[-1]
            args = args[:-2]
        if len(args) not in (4, 6) or (len(args) == 6 and args[4] != "mark"):
            raise SimError("usage: open ID tcp|udp|sctp CLIENT:PORT VIP:PORT [mark N] [callid X]")
        cid, pname = args[0], args[1].lower()
        proto = PROTOS.get(pname)
        if proto is None:
            raise SimError(f"unknown protocol {args[1]!r} (tcp, udp or sctp)")
        caddr, cport = parse_hostport(args[2])
        vaddr, vport = parse_hostport(args[3])
        if caddr.version != vaddr.version:
            raise SimError("client and virtual address are of different families")
        mark = 0
        if len(args) == 6:
            if not args[5].isdigit() or int(args[5]) > 0xFFFFFFFF:
                raise SimError(f"bad mark {args[5]!r}")
            mark = int(args[5])
        flow = Flow(proto, caddr, cport, vaddr, vport, mark, caddr, 0, False, vaddr, vport)
        if callid:
            if proto != Proto.UDP:
                raise SimError("callid is for udp only (SIP over UDP)")
            flow.payload = sip_request(format_hostport(vaddr, vport), callid)
        self.flows.pop(cid, None)
        conn = self._open(flow)
        if conn is None:
            self.out.write(f"{cid} none\n")
            return
        self.out.write(f"{cid} {format_hostport(flow.raddr, flow.rport)}\n")
        self.flows[cid] = flow

    def _open(self, flow: Flow) -> Connection | None:
        d, now = self.director, self.now
        if flow.proto == Proto.TCP:
            first = flow.inbound(TCP_SYN, TCP_HDR + 8)
        elif flow.proto == Proto.UDP:
            first = flow.inbound(length=UDP_HDR + 6)
            if flow.payload:
                first = replace(first, length=UDP_HDR + len(flow.payload), payload=flow.payload)
        else:
            first = flow.inbound(length=SCTP_HDR + 20, chunk=INIT)
        v = d.process_in(first, now)
        conn = v.conn
        if v.action != Action.FORWARD or conn is None:
            return None
        flow.raddr, flow.rport = conn.daddr, conn.dport
        if conn.fwd in (Fwd.MASQ, Fwd.FULLNAT):
            flow.replies, flow.oaddr, flow.oport = True, conn.daddr, conn.dport
        else:
            flow.replies = self.dr_replies
        reply = len(format_hostport(flow.raddr, flow.rport)) + 1  # what the real server answers
        if flow.proto == Proto.TCP:
            self._out(flow, TCP_SYN | TCP_ACK, TCP_HDR + 8)
            self._in(flow, TCP_ACK)
            self._out(flow, TCP_ACK | PSH, TCP_HDR + reply)
            self._in(flow, TCP_ACK)
        elif flow.proto == Proto.UDP:
            self._out(flow, 0, UDP_HDR + reply)
        else:
            self._out(flow, 0, SCTP_HDR + 20, INIT_ACK)
            self._in(flow, 0, SCTP_HDR + 16, COOKIE_ECHO)
            self._out(flow, 0, SCTP_HDR, COOKIE_ACK)
            self._out(flow, 0, SCTP_HDR + reply, DATA)
        return conn

    def close(self, args: list[str]) -> None:
        flow = self._flow(args, "close")
        if flow is None:
            return
        if flow.proto == Proto.TCP:
            self._in(flow, TCP_FIN | TCP_ACK)
            self._out(flow, TCP_ACK)
            self._out(flow, TCP_FIN | TCP_ACK)
            self._in(flow, TCP_ACK)
        elif flow.proto == Proto.SCTP:
            self._in(flow, 0, SCTP_HDR, SHUTDOWN)
            self._out(flow, 0, SCTP_HDR, SHUTDOWN_ACK)
            self._in(flow, 0, SCTP_HDR, SHUTDOWN_COMPLETE)

    def reset(self, args: list[str]) -> None:
        flow = self._flow(args, "reset")
        if flow is None:
            return
        if flow.proto == Proto.TCP:
            self._in(flow, TCP_RST | TCP_ACK)
        elif flow.proto == Proto.SCTP:
            self._in(flow, 0, SCTP_HDR, ABORT)

    # -- helpers -----------------------------------------------------------------------------------
    def _flow(self, args: list[str], verb: str) -> Flow | None:
        if len(args) != 1:
            raise SimError(f"usage: {verb} ID")
        return self.flows.pop(args[0], None)  # an unknown or failed ID is ignored, as kernel_sim does

    def _in(self, flow: Flow, flags: int, length: int = TCP_HDR, chunk: int = -1) -> None:
        self.director.process_in(flow.inbound(flags, length, chunk), self.now)

    def _out(self, flow: Flow, flags: int, length: int = TCP_HDR, chunk: int = -1) -> None:
        if not flow.replies:
            return  # DR and tunnel servers answer the client directly
        d = self.director
        conn = d.lookup_out(flow.proto, flow.oaddr, flow.oport, flow.caddr, flow.cport)
        if conn is not None:
            d.process_out(conn, flow.outbound(flags, length, chunk), self.now)


def simulate(lines: Iterable[str], out: TextIO, log: TextIO | None = None, dr_replies: bool = False) -> int:
    """Play `lines`; returns the exit status."""
    return Simulation(out, log, dr_replies=dr_replies).run(lines)
