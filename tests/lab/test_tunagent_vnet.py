"""The TUN agent keeps the inner checksum's offload state: a tunnelled SYN whose TCP checksum is still
CHECKSUM_PARTIAL (only the pseudo-header seed in the field, as a tc eBPF director leaves it over veth)
reaches the listener behind the VIP, like one with a full checksum; written to a TUN device without
the virtio header (the old agent), the same packet is a checksum error. Data segments with partial
checksums carry a connection's bytes; GSO frames, hand-made and from a real bpf_skb_adjust_room
encapsulation of a TSO stream, reach the application whole. Two namespaces of our own, joined by
veth: "dir" sends the IPIP frames through a packet socket (or is the TCP client), "rs" runs the agent.

This file is also the helper run inside the namespaces: `python test_tunagent_vnet.py ROLE JSON`.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from pylvs.lab.netns import Netns

A = socket.inet_aton
VIP, PORT, CLIENT = "10.99.0.1", 8080, "10.77.0.5"
SOL_PACKET, PACKET_VNET_HDR = 263, 15
VNET = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
SYN, ACK, PSH = 0x02, 0x10, 0x08
PAYLOAD = bytes(range(256)) * 12  # 3072 bytes: three segments of 1024


# -- packets ----------------------------------------------------------------------------------------
def _sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0, A(src), A(dst))
    return h[:10] + struct.pack("!H", 0xFFFF - _sum(h)) + h[12:] + payload


def tcp(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    data: bytes = b"",
    partial: bool = False,
) -> bytes:
    """A TCP segment; with partial, the checksum field holds only the pseudo-header seed."""
    h = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + data
    seed = _sum(A(src) + A(dst) + struct.pack("!HH", 6, len(h)))
    check = seed if partial else 0xFFFF - _sum(struct.pack("!H", seed) + h)
    return h[:16] + struct.pack("!H", check) + h[18:]


def ipip(outer_src: str, outer_dst: str, inner: bytes) -> bytes:
    return ipv4(outer_src, outer_dst, 4, inner)


def syn(sport: int, partial: bool, seq: int = 1000) -> bytes:
    return ipv4(CLIENT, VIP, 6, tcp(CLIENT, VIP, sport, PORT, seq, 0, SYN, partial=partial))


def tcp_snmp() -> dict[str, int]:
    with open("/proc/net/snmp") as fh:
        rows = [line.split() for line in fh if line.startswith("Tcp:")]
    return dict(zip(rows[0][1:], map(int, rows[1][1:]), strict=True))


def _packet_socket(ifname: str, vnet: bool) -> socket.socket:
    """A packet socket on one interface; ETH_P_ALL so it also sees frames leaving it."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    if vnet:
        s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.bind((ifname, 3))
    return s


_unreach = 0  # ICMP protocol-unreachable seen by _synacks


def _synacks(cap: socket.socket, want: set[int], timeout: float, port: int = PORT) -> dict[int, int]:
    """{client port: server ISN} for the SYN-ACKs from VIP:port to CLIENT seen within timeout."""
    got: dict[int, int] = {}
    end = time.monotonic() + timeout
    while want - set(got) and (left := end - time.monotonic()) > 0:
        if not select.select([cap], [], [], left)[0]:
            break
        f = cap.recv(65535)[14:]
        if len(f) >= 22 and f[9] == 1 and f[20:22] == b"\x03\x02":
            global _unreach
            _unreach += 1
        if len(f) < 40 or f[9] != 6 or f[12:16] != A(VIP) or f[16:20] != A(CLIENT):
            continue
        t = f[(f[0] & 0xF) * 4 :]
        sport, dport, seq = struct.unpack_from("!HHI", t)
        if sport == port and t[13] & (SYN | ACK) == SYN | ACK:
            got[dport] = seq
    return got


# -- roles run inside the namespaces ----------------------------------------------------------------
def _eth(a: dict[str, Any]) -> bytes:
    return bytes.fromhex(a["dst_mac"].replace(":", "") + a["src_mac"].replace(":", "")) + b"\x08\x00"


def _vnet_partial() -> bytes:
    # NEEDS_CSUM; the inner TCP header starts after Ethernet, the outer and the inner IP header
    return VNET.pack(1, 0, 0, 0, 14 + 20 + 20, 16)


def role_director(a: dict[str, Any]) -> dict[str, Any]:
    """Send tunnelled SYNs (the partial ones behind a NEEDS_CSUM virtio header); the SYN-ACKs seen."""
    tx = _packet_socket(a["ifname"], vnet=True)
    cap = _packet_socket(a["ifname"], vnet=False)
    for sport, partial, outer_src in a["syns"]:
        frame = _eth(a) + ipip(outer_src, a["outer_dst"], syn(sport, partial))
        tx.send((_vnet_partial() if partial else bytes(VNET.size)) + frame)
    got = _synacks(cap, {p for p, _, _ in a["syns"]}, a.get("wait", 2.0))
    return {"synack": sorted(got), "unreach": _unreach}


def role_director_data(a: dict[str, Any]) -> dict[str, Any]:
    """A connection through the agent: handshake, then three data segments with partial checksums."""
    tx = _packet_socket(a["ifname"], vnet=True)
    cap = _packet_socket(a["ifname"], vnet=False)

    def send(seg: bytes, partial: bool) -> None:
        frame = _eth(a) + ipip(a["outer_src"], a["outer_dst"], ipv4(CLIENT, VIP, 6, seg))
        tx.send((_vnet_partial() if partial else bytes(VNET.size)) + frame)

    sport, isn = 40010, 7000
    send(tcp(CLIENT, VIP, sport, PORT, isn, 0, SYN), partial=True)
    srv = _synacks(cap, {sport}, 3.0).get(sport)
    if srv is None:
        return {"error": "no SYN-ACK"}
    send(tcp(CLIENT, VIP, sport, PORT, isn + 1, srv + 1, ACK), partial=True)
    for i in range(3):
        chunk = PAYLOAD[1024 * i : 1024 * (i + 1)]
        send(tcp(CLIENT, VIP, sport, PORT, isn + 1 + 1024 * i, srv + 1, ACK | PSH, chunk, partial=True), True)
    return {"sent": len(PAYLOAD)}


def role_listen(a: dict[str, Any]) -> dict[str, Any]:
    """Accept on VIP:PORT until the client's connection comes (others, like a readiness probe, are
    closed), and read what it sends; bounded."""
    want = stream(a.get("size", len(PAYLOAD)))
    lst = socket.socket()
    lst.bind((VIP, PORT))
    lst.listen()
    end = time.monotonic() + a["timeout"]
    got = b""
    try:
        while (left := end - time.monotonic()) > 0:
            lst.settimeout(left)
            conn, peer = lst.accept()
            if peer[0] != a.get("peer", CLIENT):
                conn.close()
                continue
            while len(got) < len(want) and (left := end - time.monotonic()) > 0:
                conn.settimeout(left)
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                got += chunk
            break
    except TimeoutError:
        pass
    return {"received": len(got), "intact": got == want}


def stream(size: int) -> bytes:
    return (PAYLOAD * (size // len(PAYLOAD) + 1))[:size]


def role_send(a: dict[str, Any]) -> dict[str, Any]:
    """A real TCP client (the director's own stack, so TSO: GSO packets cross the veth)."""
    with socket.create_connection((VIP, PORT), timeout=5) as c:
        c.sendall(stream(a["size"]))
        c.shutdown(socket.SHUT_WR)
        c.recv(1)  # until the server closes: everything was delivered
    return {"sent": a["size"]}


def _encap_program(vip: str, outer_src: str, outer_dst: str) -> bytes:
    """eBPF for tc ingress: an IPv4 TCP packet to vip gets an outer IPv4 header (protocol 4) from
    bpf_skb_adjust_room(20, MAC, ENCAP_L3_IPV4), as a tc eBPF director encapsulates; a GSO packet
    becomes TCPv4|IPXIP4 and a partial checksum stays partial. Hand-assembled (no toolchain)."""
    hdr = bytes([0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 4, 0, 0]) + A(outer_src) + A(outer_dst)
    const = sum(struct.unpack("!10H", hdr))  # the header's sum without tot_len (and checksum)
    r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, fp = range(11)
    prog: list[tuple[int, int, int, int, int | str]] = []  # code, dst, src, imm, offset or label

    def i(code: int, dst: int = 0, src: int = 0, off: int | str = 0, imm: int = 0) -> None:
        prog.append((code, dst, src, imm, off))

    mov, movi, addi, subi, addr, rshi, andi, xori = 0xBF, 0xB7, 0x07, 0x17, 0x0F, 0x77, 0x57, 0xA7
    ldxw, ldxb, stxh, stw, be, jnei, call, exit_ = 0x61, 0x71, 0x6B, 0x62, 0xDC, 0x55, 0x85, 0x95
    i(mov, r6, r1)
    i(ldxw, r2, r6, 16)  # skb->protocol
    i(jnei, r2, off="pass", imm=socket.htons(0x0800))
    i(mov, r1, r6)
    i(movi, r2, imm=14)
    i(mov, r3, fp)
    i(addi, r3, imm=-48)
    i(movi, r4, imm=20)
    i(call, imm=26)  # bpf_skb_load_bytes(skb, 14, fp-48, 20)
    i(jnei, r0, off="pass", imm=0)
    i(ldxb, r2, fp, -48 + 9)
    i(jnei, r2, off="pass", imm=6)
    i(ldxw, r2, fp, -48 + 16)
    i(jnei, r2, off="pass", imm=int.from_bytes(A(vip), "little"))
    i(mov, r1, r6)
    i(movi, r2, imm=20)
    i(movi, r3, imm=1)
    i(movi, r4, imm=2)
    i(call, imm=50)  # bpf_skb_adjust_room(skb, 20, BPF_ADJ_ROOM_MAC, ENCAP_L3_IPV4)
    i(jnei, r0, off="drop", imm=0)
    i(ldxw, r7, r6, 0)
    i(subi, r7, imm=14)  # tot_len = skb->len - 14
    i(mov, r8, r7)
    i(addi, r8, imm=const)
    for _ in range(2):
        i(mov, r9, r8)
        i(rshi, r9, imm=16)
        i(andi, r8, imm=0xFFFF)
        i(addr, r8, r9)
    i(xori, r8, imm=0xFFFF)
    for k in range(0, 20, 4):
        i(stw, fp, off=-24 + k, imm=int.from_bytes(hdr[k : k + 4], "little", signed=True))
    i(be, r7, imm=16)
    i(stxh, fp, r7, -24 + 2)
    i(be, r8, imm=16)
    i(stxh, fp, r8, -24 + 10)
    i(mov, r1, r6)
    i(movi, r2, imm=14)
    i(mov, r3, fp)
    i(addi, r3, imm=-24)
    i(movi, r4, imm=20)
    i(movi, r5, imm=0)
    i(call, imm=9)  # bpf_skb_store_bytes(skb, 14, fp-24, 20, 0)
    labels = {"pass": len(prog)}
    i(movi, r0, imm=0)
    i(exit_)  # TC_ACT_OK
    labels["drop"] = len(prog)
    i(movi, r0, imm=2)
    i(exit_)  # TC_ACT_SHOT
    out = b""
    for n, (code, dst, src, imm, off) in enumerate(prog):
        o = labels[off] - n - 1 if isinstance(off, str) else off
        out += struct.pack("<BBhi", code, dst | src << 4, o, imm)
    return out


def role_encap(a: dict[str, Any]) -> dict[str, Any]:
    """Attach the encapsulating program on the real server's own ingress (where a director's egress
    program would have done it, the frame is the same) until SIGTERM or a bounded time."""
    import ctypes

    from pyroute2 import IPRoute  # type: ignore[import-untyped]

    insns = _encap_program(VIP, a["outer_src"], a["outer_dst"])
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQ", attr, 0, 3, len(insns) // 8, ctypes.addressof(code), ctypes.addressof(lic))
    nr = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine)
    if nr is None:
        return {"error": f"bpf() syscall number unknown on {os.uname().machine}"}
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(nr, 5, attr, 128)  # bpf(BPF_PROG_LOAD)
    if fd < 0:
        return {"error": f"bpf prog load: {os.strerror(ctypes.get_errno())}"}
    idx = socket.if_nametoindex(a["ifname"])
    try:
        with IPRoute() as ipr:
            ipr.tc("add", "clsact", idx)
            ipr.tc("add-filter", "bpf", idx, 1, fd=fd, name="plvencap", parent=0xFFFFFFF2, direct_action=True)
    except Exception as e:  # no clsact/cls_bpf in this kernel: the test skips
        return {"error": f"tc attach: {e}"}
    os.close(fd)
    print(json.dumps({"attached": True}), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    time.sleep(a.get("seconds", 30))
    return {"attached": True}


def role_old_tun(a: dict[str, Any]) -> dict[str, Any]:
    """The old agent's write: the partial SYN into a TUN device without a virtio header."""
    import fcntl

    from pylvs.realserver.tunagent import IFF_NO_PI, IFF_TUN, TUNSETIFF

    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", a["tun"].encode(), IFF_TUN | IFF_NO_PI))
    os.system(f"ip link set {a['tun']} up; sysctl -qw net.ipv4.conf.{a['tun']}.rp_filter=0")
    before = tcp_snmp()
    os.write(fd, syn(a["sport"], partial=True))
    after = tcp_snmp()
    end = time.monotonic() + 2
    while after["InCsumErrors"] == before["InCsumErrors"] and time.monotonic() < end:
        time.sleep(0.05)
        after = tcp_snmp()
    os.close(fd)
    return {k: after[k] - before[k] for k in ("InCsumErrors", "InSegs")}


def role_gso(a: dict[str, Any]) -> dict[str, Any]:
    """Does TUN take a GSO TCPv4 frame as the agent rewrites it? A handshake through the agent's
    frame_to_tun, then one GSO frame of three segments; the listener must read all of it."""
    from pylvs.realserver.tunagent import TunAgent

    lst = socket.socket()
    lst.bind((VIP, PORT + 1))
    lst.listen()
    agent = TunAgent([VIP], [a["director"]], a["tun"])
    cap = _packet_socket(a["ifname"], vnet=False)  # the SYN-ACK leaves by the route to the client

    def to_tun(seg: bytes, vh: bytes) -> bool:
        out = agent.frame_to_tun(
            vh + bytes(12) + b"\x08\x00" + ipip(a["director"], a["rs"], ipv4(CLIENT, VIP, 6, seg))
        )
        if out is not None:
            os.write(agent.tun_fd, out)
        return out is not None

    sport, isn = 40100, 5000
    srv = None
    for _ in range(6):  # sent again each second, as a client would: the TUN device may be settling
        to_tun(tcp(CLIENT, VIP, sport, PORT + 1, isn, 0, SYN), bytes(10))
        srv = _synacks(cap, {sport}, 1.0, PORT + 1).get(sport)
        if srv is not None:
            break
    if srv is None:
        return {"error": "no SYN-ACK"}
    to_tun(tcp(CLIENT, VIP, sport, PORT + 1, isn + 1, srv + 1, ACK), bytes(10))
    seg = tcp(CLIENT, VIP, sport, PORT + 1, isn + 1, srv + 1, ACK | PSH, PAYLOAD, partial=True)
    # as AF_PACKET reports a GSO frame: offsets from the link header, hdr_len = the linear part
    vh = VNET.pack(1, 1, 14 + 20 + 20 + 20 + len(PAYLOAD), 1024, 14 + 20 + 20, 16)
    try:
        if not to_tun(seg, vh):
            return {"error": "refused", "counters": agent.counters}
    except OSError as e:
        return {"error": f"tun write: {e}"}
    lst.settimeout(2)
    conn, _ = lst.accept()
    conn.settimeout(2)
    got = b""
    try:
        while len(got) < len(PAYLOAD):
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += chunk
    except TimeoutError:
        pass
    agent.close()
    return {"counters": agent.counters, "received": len(got), "intact": got == PAYLOAD}


def role_snmp(_a: dict[str, Any]) -> dict[str, Any]:
    return dict(tcp_snmp())


ROLES = {
    "director": role_director,
    "director_data": role_director_data,
    "listen": role_listen,
    "send": role_send,
    "encap": role_encap,
    "old_tun": role_old_tun,
    "gso": role_gso,
    "snmp": role_snmp,
}


# -- the lab ----------------------------------------------------------------------------------------
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]


@dataclass
class Lab:
    n: Netns
    dir: str  # the director's address on the veth, the tunnel's outer source
    rs: str
    dir_mac: str
    rs_mac: str

    def role(self, ns: str, role: str, **args: Any) -> dict[str, Any]:
        p = self.n.run(ns, [sys.executable, __file__, role, json.dumps(args)], timeout=20)
        return dict(json.loads(p.stdout.strip().splitlines()[-1]))

    def frames(self) -> dict[str, str]:
        """What the director's roles need to build frames toward the real server."""
        return {"ifname": "d0", "src_mac": self.dir_mac, "dst_mac": self.rs_mac, "outer_dst": self.rs}

    def start_agent(self, tun: str) -> subprocess.Popen[bytes]:
        code = (
            "import sys\nfrom pylvs.realserver.tunagent import run_forever\n"
            f"sys.exit(run_forever([{VIP!r}], [{self.dir!r}], {tun!r}))\n"
        )
        p = self.n.spawn("rs", [sys.executable, "-c", code], log_name="agent")
        end = time.monotonic() + 5
        while time.monotonic() < end and p.poll() is None:
            # the packet socket is bound right after the device is up, before any frame is sent
            if self.n.run("rs", ["ip", "link", "show", tun], check=False).returncode == 0:
                time.sleep(0.2)
                return p
            time.sleep(0.05)
        raise AssertionError("agent did not start: " + self.n.log("agent"))

    def stop_agent(self, p: subprocess.Popen[bytes]) -> dict[str, int]:
        """SIGTERM, then the counters the agent prints as it stops."""
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(5)
        line = [x for x in self.n.log("agent").splitlines() if x.startswith("TUN agent stopped:")][-1]
        return {k: int(v) for k, v in (kv.split("=") for kv in line.split(":", 1)[1].split())}


@pytest.fixture
def lab() -> Iterator[Lab]:
    n = Netns()
    try:
        sub = random.randint(1, 250)
        d, r = f"10.{sub}.0.1", f"10.{sub}.0.2"
        n.add("dir")
        n.add("rs")
        n.veth("dir", "d0", "rs", "r0")
        n.addr("dir", "d0", f"{d}/24")
        n.addr("rs", "r0", f"{r}/24")
        n.addr("rs", "lo", f"{VIP}/32")
        # replies go straight back to the client, through the director as its gateway
        n.sh("rs", f"ip route add 10.77.0.0/16 via {d}")
        n.sysctl(
            "rs",
            net__ipv4__conf__all__arp_ignore=1,
            net__ipv4__conf__all__arp_announce=2,
            net__ipv4__conf__all__rp_filter=0,
            net__ipv4__conf__default__rp_filter=0,
        )

        def mac(role: str, ifname: str) -> str:
            return str(json.loads(n.run(role, ["ip", "-j", "link", "show", ifname]).stdout)[0]["address"])

        yield Lab(n, d, r, mac("dir", "d0"), mac("rs", "r0"))
    finally:
        n.close()


def test_partial_and_full_checksum_syns_both_reach_the_listener(lab: Lab) -> None:
    listener = f"import socket,time\ns=socket.socket()\ns.bind(({VIP!r},{PORT}))\ns.listen()\ntime.sleep(30)"
    lab.n.spawn("rs", [sys.executable, "-c", listener], log_name="listener")
    lab.n.wait_tcp("rs", VIP, PORT, timeout=5)
    agent = lab.start_agent("plvtun0")
    before = lab.role("rs", "snmp")
    # partial checksum, full checksum, and one from an address that is not an allowed director
    syns = [[40000, True, lab.dir], [40001, False, lab.dir], [40003, True, "10.66.0.9"]]
    got = lab.role("dir", "director", **lab.frames(), syns=syns, wait=1.5)
    after = lab.role("rs", "snmp")
    counters = lab.stop_agent(agent)
    assert got["synack"] == [40000, 40001], lab.n.log("agent")
    assert after["InCsumErrors"] == before["InCsumErrors"]
    assert got["unreach"] == 0  # the drop-all raw socket still counts as delivery of protocol 4
    assert counters["rx"] == 3 and counters["decap"] == 2 and counters["refused"] == 1, counters
    assert counters["partial"] == 1, counters


def test_partial_checksum_data_segments_reach_the_application(lab: Lab) -> None:
    listen = lab.n.spawn(
        "rs", [sys.executable, __file__, "listen", json.dumps({"timeout": 8})], log_name="data"
    )
    lab.n.wait_tcp("rs", VIP, PORT, timeout=5)
    agent = lab.start_agent("plvtun0")
    sent = lab.role("dir", "director_data", **lab.frames(), outer_src=lab.dir)
    assert sent.get("error") is None, sent
    listen.wait(8)
    got = json.loads(lab.n.log("data").strip().splitlines()[-1])
    counters = lab.stop_agent(agent)
    assert got == {"received": len(PAYLOAD), "intact": True}, (got, counters)
    assert counters["partial"] == 5 and counters["refused"] == 0, counters


def test_partial_checksum_without_virtio_header_is_a_checksum_error(lab: Lab) -> None:
    """What the old agent did with such a packet: the stack counts a checksum error and never answers."""
    got = lab.role("rs", "old_tun", tun="plvold0", sport=40002)
    assert got["InCsumErrors"] >= 1


def test_tun_takes_a_gso_frame_as_the_agent_rewrites_it(lab: Lab) -> None:
    got = lab.role("rs", "gso", tun="plvtun1", ifname="r0", director=lab.dir, rs=lab.rs)
    assert got.get("error") is None, got
    assert got["intact"] and got["counters"]["gso"] == 1, got


def test_gso_frames_from_a_tc_ebpf_encapsulation_reach_the_application(lab: Lab) -> None:
    """The fast path's own frames: a real TCP stream (TSO, so GSO packets over veth, checksums partial)
    wrapped in IPIP by bpf_skb_adjust_room(ENCAP_L3_IPV4), read by the agent's packet socket as GSO
    TCPv4 frames and written to TUN as such."""
    size = 300_000
    lab.n.sh("dir", f"ip route add {VIP}/32 via {lab.rs}")
    enc = lab.n.spawn(
        "rs",
        [
            sys.executable,
            __file__,
            "encap",
            json.dumps({"ifname": "r0", "outer_src": lab.dir, "outer_dst": lab.rs}),
        ],
        log_name="encap",
    )
    end = time.monotonic() + 5
    while '"attached"' not in lab.n.log("encap") and enc.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    if '"attached"' not in lab.n.log("encap"):
        pytest.skip("tc eBPF encapsulation unavailable: " + lab.n.log("encap")[-300:])
    listen = lab.n.spawn(
        "rs",
        [sys.executable, __file__, "listen", json.dumps({"timeout": 10, "peer": lab.dir, "size": size})],
        log_name="data",
    )
    agent = lab.start_agent("plvtun0")
    sent = lab.role("dir", "send", size=size)
    listen.wait(12)
    got = json.loads(lab.n.log("data").strip().splitlines()[-1])
    counters = lab.stop_agent(agent)
    assert sent == {"sent": size}
    assert got == {"received": size, "intact": True}, (got, counters)
    assert counters["gso"] >= 1 and counters["refused"] == 0, counters


if __name__ == "__main__":
    print(json.dumps(ROLES[sys.argv[1]](json.loads(sys.argv[2]))))
