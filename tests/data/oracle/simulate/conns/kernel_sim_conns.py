#!/usr/bin/env python3
# ruff: noqa  (a guest script for the oracle VM, kept close to ../shared/oracle/guest/kernel_sim.py)
"""kernel_sim.py (../shared/oracle/guest) plus two things, for the connection-table tests:

* a `sysctl NAME=VALUE` event: sets net.ipv4.vs.NAME in the director; `stats`: `ipvsadm -Ln --stats`;
* a `conns` event: prints `ipvsadm -Lnc` with its entries sorted (the kernel's order is a random
  hash order), after a line `conns:`;
* direct routing: every real server also holds every virtual address on `lo` (ARP replies for them
  off) and the director accepts forwarded packets from its own addresses, so `-g` servers answer the
  client directly (their replies go around IPVS, through the director's forwarding only).

Play a `pylvs simulate` event file against the real kernel's IPVS (runs inside the oracle VM).

usage: kernel_sim.py FILE...     (FILE relative to $ORACLE_HOST or absolute)

For each FILE it builds a fresh lab in network namespaces (so IPVS starts empty), plays the events with
real rules (ipvsadm), real TCP/UDP connections and real time, and prints what `pylvs simulate` prints
for the same file: `ID RIP:PORT` (or `ID none`) for each `open`, the `ipvsadm -Ln` table for each `list`.
With $ORACLE_OUT set, each FILE's output goes to $ORACLE_OUT/<FILE's name>.out instead of stdout.

Lab: client namespace `cl` (every client address of the file, /32 on eth0) -- director `dir` (every
virtual address, /32 on `vcl`; bridge br0 with .100 of each real servers' /24) -- one namespace per real
server address (eth0 on br0, default route via the director: NAT mode). Each real server listens on every
port the file uses, TCP and UDP, and answers each connection or datagram with `RIP:PORT`, the address
and port it was reached on. Use `-m` real servers: the director must see both directions, as `open`
assumes. `mark N` on an `open` becomes a mangle rule in the director for that one flow.

`time T` waits until T seconds after the start; the other events take real time too (tens of
milliseconds each in the VM), so keep what depends on time coarse (seconds apart).

Event lines (the `pylvs simulate` format): ipvsadm rules in restore format (`-A ...`, `-a ...`, `-e`,
`-d`, `-E`, `-D`, `-C`); `time T`; `open ID tcp|udp CLIENT:PORT VIP:PORT [mark N]`; `close ID`;
`reset ID`; `list`; blank lines and `#` comments. A rule that ipvsadm rejects prints its message and stops
the file with exit status 1.
"""
import ipaddress
import os
import re
import shlex
import socket
import struct
import subprocess
import sys
import time

CONNECT_TIMEOUT = 2.0


def sh(*cmd: str, check: bool = True, inp: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, input=inp, capture_output=True, text=True, check=check)


def ns(name: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", name, *cmd, check=check)


def hostport(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def read_events(path: str) -> list[str]:
    out = []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def plan(events: list[str]) -> tuple[set[str], set[str], dict[str, set[int]]]:
    clients, vips, rs_ports, ports = set(), set(), {}, set()
    for ev in events:
        w = shlex.split(ev)
        if w[0] == "open":
            c, _ = hostport(w[3])
            v, vp = hostport(w[4])
            clients.add(c)
            vips.add(v)
            ports.add(vp)
        elif w[0].startswith("-"):
            for opt in ("-t", "-u", "--tcp-service", "--udp-service"):
                if opt in w:
                    v, vp = hostport(w[w.index(opt) + 1])
                    vips.add(v)
                    if vp:
                        ports.add(vp)
            for opt in ("-r", "--real-server"):
                if opt in w:
                    r = w[w.index(opt) + 1]
                    rip, rp = hostport(r) if ":" in r else (r, 0)
                    rs_ports.setdefault(rip, set())
                    if rp:
                        ports.add(rp)
    for rip in rs_ports:
        rs_ports[rip] = {p for p in ports if p}
    return clients, vips, rs_ports


RS_SERVER = r'''
import asyncio, socket, sys
rip, ports = sys.argv[1], [int(p) for p in sys.argv[2].split(",") if p]
class U(asyncio.DatagramProtocol):
    def __init__(self, port): self.port = port
    def connection_made(self, t): self.t = t
    def datagram_received(self, data, addr): self.t.sendto(f"{rip}:{self.port}\n".encode(), addr)
async def main():
    async def handle(r, w):
        port = w.get_extra_info("sockname")[1]
        try:
            w.write(f"{rip}:{port}\n".encode()); await w.drain()
            while await r.read(4096): pass
        except ConnectionError: pass
        finally: w.close()
    loop = asyncio.get_running_loop()
    for p in ports:
        await asyncio.start_server(handle, "0.0.0.0", p, backlog=512, reuse_address=True)
        await loop.create_datagram_endpoint(lambda p=p: U(p), local_addr=("0.0.0.0", p))
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
'''


def lab_up(clients: set[str], vips: set[str], rs_ports: dict[str, set[int]]) -> list[subprocess.Popen]:
    names = ["cl", "dir"] + [f"rs{k}" for k in range(len(rs_ports))]
    for n in names:
        sh("ip", "netns", "add", n)
        sh("ip", "-n", n, "link", "set", "lo", "up")
    nets = sorted({ipaddress.ip_interface(f"{r}/24").network for r in rs_ports})
    b = ["link add br0 type bridge", "link set br0 up", "link add vcl type veth peer name eth0 netns cl",
         "link set vcl up"]
    for net in nets:
        dip = net.network_address + 100
        if str(dip) in rs_ports:
            dip = net.network_address + 254
        b.append(f"addr add {dip}/24 dev br0")
    for v in sorted(vips):
        b.append(f"addr add {v}/32 dev vcl")
    for c in sorted(clients):
        b.append(f"route add {c}/32 dev vcl")
    for k, rip in enumerate(sorted(rs_ports)):
        b += [f"link add vrs{k} type veth peer name eth0 netns rs{k}", f"link set vrs{k} master br0",
              f"link set vrs{k} up"]
    sh("ip", "-n", "dir", "-b", "-", inp="\n".join(b) + "\n")
    ns("dir", "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for key in ("net.ipv4.conf.all.accept_local=1", "net.ipv4.conf.br0.accept_local=1",
                "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.br0.rp_filter=0"):
        ns("dir", "sysctl", "-qw", key, check=False)
    c = [f"addr add {a}/32 dev eth0" for a in sorted(clients)] + ["link set eth0 up", "route add default dev eth0"]
    sh("ip", "-n", "cl", "-b", "-", inp="\n".join(c) + "\n")
    procs = []
    for k, rip in enumerate(sorted(rs_ports)):
        net = ipaddress.ip_interface(f"{rip}/24").network
        gw = net.network_address + (254 if str(net.network_address + 100) in rs_ports else 100)
        sh("ip", "-n", f"rs{k}", "-b", "-",
           inp=f"addr add {rip}/24 dev eth0\nlink set eth0 up\nroute add default via {gw}\n"
           + "".join(f"addr add {v}/32 dev lo\n" for v in sorted(vips)))
        for key in ("net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2",
                    "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0"):
            ns(f"rs{k}", "sysctl", "-qw", key, check=False)
        p = subprocess.Popen(["ip", "netns", "exec", f"rs{k}", "python3", "-c", RS_SERVER, rip,
                              ",".join(map(str, sorted(rs_ports[rip])))], stdout=subprocess.PIPE, text=True)
        p.stdout.readline()  # "ready"
        procs.append(p)
    return procs


def lab_down(procs: list[subprocess.Popen], n_rs: int) -> None:
    for p in procs:
        p.kill()
        p.wait()
    for n in ["cl", "dir"] + [f"rs{k}" for k in range(n_rs)]:
        sh("ip", "netns", "del", n, check=False)


def play(events: list[str], emit) -> int:
    """The client side: runs inside the `cl` namespace; rules and listings go to `dir`."""
    conns: dict[str, socket.socket] = {}
    t0 = time.monotonic()
    for ev in events:
        w = shlex.split(ev)
        if w[0].startswith("-"):
            p = ns("dir", "ipvsadm", *w, check=False)
            if p.returncode:
                emit(p.stderr)
                return 1
        elif w[0] == "time":
            delay = t0 + float(w[1]) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        elif w[0] == "list":
            emit(ns("dir", "ipvsadm", "-Ln").stdout)
        elif w[0] == "sysctl":
            ns("dir", "sysctl", "-qw", f"net.ipv4.vs.{w[1]}")
        elif w[0] == "stats":
            emit(ns("dir", "ipvsadm", "-Ln", "--stats").stdout)
        elif w[0] == "conns":
            lines = ns("dir", "ipvsadm", "-Lnc").stdout.splitlines()
            emit("conns:\n" + "".join(sorted(x + "\n" for x in lines[2:])))
        elif w[0] == "open":
            cid, proto = w[1], w[2]
            (c, cp), (v, vp) = hostport(w[3]), hostport(w[4])
            if len(w) >= 7 and w[5] == "mark":
                ns("dir", "iptables", "-t", "mangle", "-A", "PREROUTING", "-s", c, "-d", v, "-p", proto,
                   "--sport", str(cp), "--dport", str(vp), "-j", "MARK", "--set-mark", w[6])
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            s = socket.socket(socket.AF_INET, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.settimeout(CONNECT_TIMEOUT)
            s.bind((c, cp))
            try:
                if kind == socket.SOCK_STREAM:
                    s.connect((v, vp))
                    line = s.recv(256).decode().strip()
                else:
                    s.sendto(b"hello\n", (v, vp))
                    line = s.recvfrom(256)[0].decode().strip()
                emit(f"{cid} {line or 'none'}\n")
                conns[cid] = s
            except OSError:
                s.close()
                emit(f"{cid} none\n")
        elif w[0] == "close":
            s = conns.pop(w[1], None)
            if s is not None and s.type == socket.SOCK_STREAM:
                try:
                    s.shutdown(socket.SHUT_WR)
                    while s.recv(256):
                        pass
                except OSError:
                    pass
            if s is not None:
                s.close()
        elif w[0] == "reset":
            s = conns.pop(w[1], None)
            if s is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
        else:
            emit(f"unknown event: {ev}\n")
            return 1
        time.sleep(0.02)  # let the last packets of this event cross the director
    return 0


def main() -> None:
    if sys.argv[1:2] == ["--play"]:  # inside the client namespace
        out = open(sys.argv[3], "w")
        rc = play(read_events(sys.argv[2]), lambda s: (out.write(s), out.flush()))
        sys.exit(rc)
    files = sys.argv[1:]
    if not files:
        sys.exit(__doc__)
    status = 0
    for f in files:
        events = read_events(f)
        clients, vips, rs_ports = plan(events)
        procs = lab_up(clients, vips, rs_ports)
        result = f"/tmp/{os.path.basename(f)}.out"
        try:
            rc = subprocess.run(["ip", "netns", "exec", "cl", sys.executable, os.path.abspath(__file__),
                                 "--play", os.path.abspath(f), result]).returncode
        finally:
            lab_down(procs, len(rs_ports))
        text = open(result).read()
        if os.environ.get("ORACLE_OUT"):
            with open(os.path.join(os.environ["ORACLE_OUT"], os.path.basename(f) + ".out"), "w") as o:
                o.write(text)
            print(f"{f}: exit {rc}", file=sys.stderr)
        else:
            sys.stdout.write(text)
        status = status or rc
    sys.exit(status)


if __name__ == "__main__":
    main()
