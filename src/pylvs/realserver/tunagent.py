"""IP-in-IP decapsulation in user space, for real servers whose kernel has no ipip module.

The director's tunnelled packets are read from a packet socket (AF_PACKET, SOCK_RAW bound to
ETH_P_IP on every interface) with a virtio-net header in front of each one. The header is why: a
packet can arrive with its inner TCP/UDP checksum still CHECKSUM_PARTIAL (a director that encapsulates
in a tc eBPF program, over veth, keeps the offload state across namespaces: the checksum field holds
only the pseudo-header seed). A raw socket hands us the bytes without that fact, and writing them to
the TUN device as they are makes the stack drop the packet as a checksum error. The virtio header
says NEEDS_CSUM and where the checksum starts, and the TUN device (opened with IFF_VNET_HDR) takes the
same header back, so the inner packet enters the stack as CHECKSUM_PARTIAL, as a kernel ipip device
would have left it. GSO frames (several TCPv4 segments in one, as TSO and bpf_skb_adjust_room leave
them over veth) go through the same way, their header length and checksum offsets moved to the inner
packet; the stack takes one as it takes a GRO packet. Other GSO types, outer fragments (the kernel
reassembles only for its own sockets) and frames too big for the buffer are counted as refused.

Why this socket: ETH_P_IP rather than ETH_P_ALL because an ETH_P_ALL tap sees a frame once per
layered device (bond slave and master, VLAN parent and child) and every outgoing frame, and runs
before tc ingress, while an ETH_P_IP socket gets each received IPv4 packet once, where the IP stack
gets it (after tc and netfilter ingress, which is what a real server wants). SOCK_RAW because the
kernel allows PACKET_VNET_HDR only there; the frame then starts with the link header, whose length
comes from sll_hatype (Ethernet and loopback 14, layer-3 devices 0; other link types are refused).
A classic BPF filter, with offsets from the network header so it fits every link type, passes only
IPv4 protocol 4 sent to this host (sll_pkttype PACKET_HOST, which is checked again here).

A raw socket for protocol 4 stays open with a filter that drops everything: it is never read, but
the kernel counts a matching raw socket as delivery and so sends no protocol-unreachable back.

Each packet's outer source must be an allowed director and the inner packet IPv4 to one of our VIPs;
the inner packet is written to the TUN device and the stack receives it as if it had arrived there,
from the client to the VIP, and the reply leaves by the normal route, straight to the client.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import subprocess

from pylvs import cbpf
from pylvs.cbpf import ACCEPT, ALU_AND_K, JEQ_K, LD_B_ABS, LD_W_ABS, RET_K, Insn
from pylvs.engines.packet.frames import F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, NO_VNET, VNET, VNET_LEN

# The virtio_net_hdr layout and flags come from the packet engine's frames module: the same header
# (host byte order) on the AF_PACKET socket and on the TUN device.
TUNSETIFF = 0x400454CA
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IPPROTO_IPIP = 4

ETH_P_IP = 0x0800
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
PACKET_HOST = 0
SKF_AD_PKTTYPE = 0xFFFFF004  # SKF_AD_OFF + SKF_AD_PKTTYPE
SKF_NET_OFF = 0xFFF00000  # loads from here on are relative to the network header
# sll_hatype -> bytes of link header before the IP header in a SOCK_RAW frame
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772
ARPHRD_L3 = (0xFFFE, 768, 778, 519)  # NONE (tun, wireguard), TUNNEL, IPGRE, RAWIP


RECV_MAX = 256 * 1024  # a GSO frame can be a 64 KiB packet (more with BIG TCP: counted as refused)


def packet_filter() -> list[Insn]:
    """IPv4, protocol 4, sent to this host; offsets from the network header, whatever the link."""
    return [
        (LD_B_ABS, 0, 0, SKF_NET_OFF),
        (ALU_AND_K, 0, 0, 0xF0),
        (JEQ_K, 0, 5, 0x40),  # version 4, else reject
        (LD_B_ABS, 0, 0, SKF_NET_OFF + 9),
        (JEQ_K, 0, 3, IPPROTO_IPIP),
        (LD_W_ABS, 0, 0, SKF_AD_PKTTYPE),
        (JEQ_K, 0, 1, PACKET_HOST),
        (RET_K, 0, 0, ACCEPT),
        (RET_K, 0, 0, 0),
    ]


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI | IFF_VNET_HDR))
        # 10 is the default; set it so a device someone else configured cannot shift our header.
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_LEN))
    except OSError:
        os.close(fd)
        raise
    return fd


def _bind_all(sock: socket.socket, proto: int) -> None:
    """bind() to every interface (ifindex 0): Python's AF_PACKET bind insists on an interface name."""
    sll = struct.pack("=HHiHBB8s", socket.AF_PACKET, socket.htons(proto), 0, 0, 0, 0, b"")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.bind(sock.fileno(), ctypes.c_char_p(sll), len(sll)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"bind packet socket: {os.strerror(e)}")


def open_packet_socket() -> socket.socket:
    # Protocol 0 at creation: nothing is queued before the options and the filter are in place.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        cbpf.attach(s, packet_filter())
        _bind_all(s, ETH_P_IP)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


def _sysctl(key: str, value: str) -> None:
    try:
        with open("/proc/sys/" + key.replace(".", "/"), "w") as fh:
            fh.write(value)
    except OSError:
        pass


def _link_len(hatype: int) -> int | None:
    if hatype in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
        return 14
    return 0 if hatype in ARPHRD_L3 else None


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


class TunAgent:
    def __init__(self, vips: list[str], directors: list[str], tun_name: str = "plvtun0") -> None:
        self.vips = {socket.inet_aton(v) for v in vips}
        self.directors = {socket.inet_aton(d) for d in directors}
        self.tun_name = tun_name
        self.counters = {"rx": 0, "decap": 0, "refused": 0, "partial": 0, "gso": 0}
        self.tun_fd = open_tun(tun_name)
        self.sock: socket.socket | None = None
        self.raw: socket.socket | None = None
        try:
            subprocess.run(["ip", "link", "set", tun_name, "up"], check=True, capture_output=True)
            # Inner packets come from clients the tun device has no route back to: loose reverse-path checks.
            _sysctl(f"net.ipv4.conf.{tun_name}.rp_filter", "0")
            _sysctl("net.ipv4.conf.all.rp_filter", "0")
            self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
            cbpf.attach(self.raw, [(RET_K, 0, 0, 0)])
            self.sock = open_packet_socket()
        except BaseException:
            self.close()
            raise
        self._buf = bytearray(RECV_MAX)

    def decap(self, data: bytes) -> bytes | None:
        """The inner packet of one tunnelled datagram (outer IPv4 header first), or None if it is not for us."""
        if len(data) < 40 or data[0] >> 4 != 4:
            return None
        ihl = (data[0] & 0xF) * 4
        total = int.from_bytes(data[2:4], "big")
        if ihl < 20 or data[9] != IPPROTO_IPIP or int.from_bytes(data[6:8], "big") & 0x3FFF:
            return None  # not IPIP, or a fragment (the kernel reassembles only for sockets of its own)
        if self.directors and data[12:16] not in self.directors:
            return None
        if ihl + 20 <= total < len(data):
            data = data[:total]  # link-layer padding
        inner = data[ihl:]
        if len(inner) < 20 or inner[0] >> 4 != 4:
            return None
        if self.vips and inner[16:20] not in self.vips:
            return None
        return inner

    def frame_to_tun(self, frame: bytes, link_len: int = 14) -> bytes | None:
        """What to write to the TUN device for one frame read from the packet socket (virtio header,
        link header of link_len bytes, outer IPv4 packet): the inner packet behind a virtio header
        that keeps its checksum and segmentation offload state, or None to refuse it."""
        if len(frame) < VNET_LEN + link_len:
            return None
        flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET.unpack_from(frame)
        outer = frame[VNET_LEN + link_len :]
        inner = self.decap(outer)
        if inner is None:
            return None
        shift = link_len + (outer[0] & 0xF) * 4  # csum_start counts from the link header
        if gso_type == GSO_NONE:
            if not flags & F_NEEDS_CSUM:
                return NO_VNET + inner
            # The partial checksum is the inner L4 one: it starts right after the inner IP header.
            start = csum_start - shift
            if start != (inner[0] & 0xF) * 4 or start + csum_offset + 2 > len(inner):
                return None
            self.counters["partial"] += 1
            return VNET.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, start, csum_offset) + inner
        return self._gso(inner, gso_type, gso_size)

    def _gso(self, inner: bytes, gso_type: int, gso_size: int) -> bytes | None:
        # Only TCP over IPv4 is segmented for us; the inner packet keeps it, with its own offsets.
        ihl = (inner[0] & 0xF) * 4
        if gso_type & ~GSO_ECN != GSO_TCPV4 or inner[9] != socket.IPPROTO_TCP or len(inner) < ihl + 20:
            return None
        thl = (inner[ihl + 12] >> 4) * 4
        if thl < 20 or len(inner) < ihl + thl or gso_size == 0:
            return None
        # The segments' checksums are left to the stack (CHECKSUM_PARTIAL): whatever the frame said
        # (NEEDS_CSUM, or DATA_VALID after GRO), the field must hold the pseudo-header seed.
        seed = _fold(
            int.from_bytes(inner[12:14], "big")
            + int.from_bytes(inner[14:16], "big")
            + int.from_bytes(inner[16:18], "big")
            + int.from_bytes(inner[18:20], "big")
            + socket.IPPROTO_TCP
            + len(inner)
            - ihl
        )
        pkt = bytearray(inner)
        pkt[ihl + 16 : ihl + 18] = seed.to_bytes(2, "big")
        self.counters["gso"] += 1
        return VNET.pack(F_NEEDS_CSUM, gso_type, ihl + thl, gso_size, ihl, 16) + bytes(pkt)

    def _drain(self) -> None:
        assert self.sock is not None
        buf = self._buf
        for _ in range(256):  # bounded: the stop pipe gets a look between batches
            try:
                n, addr = self.sock.recvfrom_into(buf, 0, socket.MSG_TRUNC)
            except BlockingIOError:
                return
            except OSError as e:
                # a frame whose offload state cannot be put in a virtio header is dropped by the kernel
                if e.errno in (errno.EINVAL, errno.EMSGSIZE):
                    self.counters["rx"] += 1
                    self.counters["refused"] += 1
                    continue
                raise
            self.counters["rx"] += 1
            out = None
            link_len = _link_len(addr[3])
            if n <= len(buf) and addr[2] == PACKET_HOST and link_len is not None:
                out = self.frame_to_tun(bytes(buf[:n]), link_len)
            if out is None:
                self.counters["refused"] += 1
                continue
            try:
                os.write(self.tun_fd, out)
                self.counters["decap"] += 1
            except OSError:
                self.counters["refused"] += 1

    def run(self, stop_fd: int | None = None) -> None:
        assert self.sock is not None
        fds = [self.sock.fileno()] + ([stop_fd] if stop_fd is not None else [])
        while True:
            ready, _, _ = select.select(fds, [], [])
            if stop_fd is not None and stop_fd in ready:
                return
            self._drain()

    def close(self) -> None:
        for s in (self.sock, self.raw):
            if s is not None:
                s.close()
        self.sock = self.raw = None
        if self.tun_fd >= 0:
            os.close(self.tun_fd)
            self.tun_fd = -1


def run_forever(vips: list[str], directors: list[str], tun_name: str) -> int:
    agent = TunAgent(vips, directors, tun_name)
    r, w = os.pipe()

    def _stop(*_a: object) -> None:
        os.write(w, b"x")

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        agent.run(r)
    finally:
        agent.close()
        print("TUN agent stopped: " + " ".join(f"{k}={v}" for k, v in agent.counters.items()), flush=True)
    return 0
