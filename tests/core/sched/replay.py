"""A small stand-in for `pylvs simulate`, enough to replay the scheduler oracle files against the
schedulers alone: rules go through the Director, and each connection moves the real server's
counters the way the kernel's would (TCP open = established = active; close = inactive until the
FIN timeout; reset = CLOSE for 10 s; UDP = inactive for the UDP timeout)."""

from __future__ import annotations

import ipaddress
import random
import shlex
from dataclasses import dataclass
from pathlib import Path

from pylvs.core.director import Director
from pylvs.core.sched.base import SchedEnv
from pylvs.core.service import RealServer, VirtualService
from pylvs.core.types import DestConfig, Fwd, Packet, Proto, ServiceConfig, ServiceKey, SvcFlags

FIN_TIMEOUT = 120.0
CLOSE_TIMEOUT = 10.0
UDP_TIMEOUT = 300.0
SCHED_FLAGS = {
    "sh-fallback": SvcFlags.SCHED1,
    "mh-fallback": SvcFlags.SCHED1,
    "flag-1": SvcFlags.SCHED1,
    "sh-port": SvcFlags.SCHED2,
    "mh-port": SvcFlags.SCHED2,
    "flag-2": SvcFlags.SCHED2,
}


def hostport(s: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    host, _, port = s.rpartition(":")
    if not host:
        return ipaddress.ip_address(s.strip("[]")), 0
    return ipaddress.ip_address(host.strip("[]")), int(port)


@dataclass
class Conn:
    dest: RealServer
    active: bool
    expires: float


class Replay:
    def __init__(self, seed: int = 0) -> None:
        self.d = Director(rng=random.Random(seed))
        self.env: SchedEnv = self.d.env
        self.conns: dict[str, Conn] = {}
        self.out: list[str] = []

    def _changed(self, dest: RealServer) -> None:
        svc = dest.service
        if svc.scheduler is not None:
            svc.scheduler.load_changed(dest)

    def _key(self, w: list[str]) -> ServiceKey:
        for opt, proto in (("-t", Proto.TCP), ("-u", Proto.UDP)):
            if opt in w:
                addr, port = hostport(w[w.index(opt) + 1])
                return ServiceKey.for_addr(proto, addr, port)
        return ServiceKey.for_fwmark(int(w[w.index("-f") + 1]))

    def _rule(self, w: list[str]) -> None:
        key = self._key(w)
        opt = {w[i]: w[i + 1] for i in range(len(w) - 1) if w[i].startswith("-")}
        if w[0] in ("-A", "-E"):
            flags = SvcFlags.NONE
            for f in opt.get("-b", "").split(","):
                if f:
                    flags |= SCHED_FLAGS[f]
            cfg = ServiceConfig(scheduler=opt.get("-s", "wlc"), flags=flags)
            (self.d.add_service if w[0] == "-A" else self.d.edit_service)(key, cfg)
            return
        addr, port = hostport(opt["-r"])
        port = port or key.port
        if w[0] == "-d":
            self.d.del_dest(key, addr, port)
            return
        dcfg = DestConfig(
            addr,
            port,
            Fwd.MASQ,
            int(opt.get("-w", "1")),
            u_threshold=int(opt.get("-x", "0")),
            l_threshold=int(opt.get("-y", "0")),
        )
        (self.d.add_dest if w[0] == "-a" else self.d.edit_dest)(key, dcfg)

    def _expire(self) -> None:
        now = self.env.now
        for cid, c in list(self.conns.items()):
            if c.expires <= now:
                del self.conns[cid]
                c.dest.unbind_conn(c.active)
                self._changed(c.dest)

    def _service(self, proto: Proto, vip: str, mark: int) -> VirtualService | None:
        table = self.d.services
        if mark:
            svc = table.get(ServiceKey.for_fwmark(mark))
            if svc is not None:
                return svc
        addr, port = hostport(vip)
        return table.get(ServiceKey.for_addr(proto, addr, port))

    def _open(self, w: list[str]) -> None:
        cid, proto = w[1], Proto.TCP if w[2] == "tcp" else Proto.UDP
        mark = int(w[6]) if len(w) >= 7 and w[5] == "mark" else 0
        caddr, cport = hostport(w[3])
        vaddr, vport = hostport(w[4])
        svc = self._service(proto, w[4], mark)
        dest = None
        if svc is not None and svc.scheduler is not None:
            pkt = Packet(proto, caddr, cport, vaddr, vport, fwmark=mark, tcp_flags=0x02)
            dest = svc.scheduler.schedule(pkt, self.env)
        if dest is None:
            self.out.append(f"{cid} none")
            return
        dest.bind_conn()
        active = proto == Proto.TCP
        if active:
            dest.activeconns += 1
        self._changed(dest)
        expires = self.env.now + (UDP_TIMEOUT if proto == Proto.UDP else 900.0)
        self.conns[cid] = Conn(dest, active, expires)
        self.out.append(f"{cid} {dest.addr}:{dest.port}")

    def _end(self, cid: str, timeout: float) -> None:
        c = self.conns.get(cid)
        if c is None or not c.active:
            return
        c.active = False
        c.dest.activeconns -= 1
        c.expires = self.env.now + timeout
        self._changed(c.dest)

    def line(self, line: str) -> None:
        line = line.strip()
        if not line or line.startswith("#"):
            return
        w = shlex.split(line)
        if w[0].startswith("-"):
            self._rule(w)
        elif w[0] == "time":
            self.env.now = float(w[1])
            self._expire()
            for svc in self.d.services:
                if svc.scheduler is not None:
                    svc.scheduler.tick(self.env)
        elif w[0] == "open":
            self._open(w)
        elif w[0] == "close":
            self._end(w[1], FIN_TIMEOUT)
        elif w[0] == "reset":
            self._end(w[1], CLOSE_TIMEOUT)


def replay_file(path: Path, seed: int = 0) -> list[str]:
    r = Replay(seed)
    for line in path.read_text().splitlines():
        r.line(line)
    return r.out


def kernel_picks(path: Path) -> list[str]:
    """The `ID RIP:PORT` / `ID none` lines of a kernel_sim answer."""
    out = []
    for line in path.read_text().splitlines():
        w = line.split()
        if len(w) == 2 and w[0].isdigit():
            out.append(line)
    return out
