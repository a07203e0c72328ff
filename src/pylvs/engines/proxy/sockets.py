"""Socket options the proxy engine needs, and the sockets it makes (listeners and outgoing)."""

from __future__ import annotations

import socket
import struct

from pylvs.core.types import IPAddr

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
IPV6_TRANSPARENT = getattr(socket, "IPV6_TRANSPARENT", 75)
IPV6_FREEBIND = 78
SO_MARK = getattr(socket, "SO_MARK", 36)
_LINGER_RST = struct.pack("ii", 1, 0)


def family(addr: IPAddr) -> socket.AddressFamily:
    return socket.AF_INET if addr.version == 4 else socket.AF_INET6


def set_transparent(sock: socket.socket) -> None:
    """IP_TRANSPARENT + IP_FREEBIND: bind to an address that is not ours (needs CAP_NET_ADMIN)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
    else:
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)


def set_freebind(sock: socket.socket) -> None:
    """Let a listener bind a VIP that is not (yet) configured on this host."""
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        else:
            sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    except OSError:
        pass


def set_linger_rst(sock: socket.socket) -> None:
    """Make close() send a RST at once (SO_LINGER with a zero timeout)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    except OSError:
        pass


def get_mark(sock: socket.socket) -> int:
    """The firewall mark of an accepted socket (the SYN's mark when tcp_fwmark_accept=1)."""
    try:
        return sock.getsockopt(socket.SOL_SOCKET, SO_MARK)
    except OSError:
        return 0


def tcp_listener(
    addr: str, port: int, af: socket.AddressFamily, transparent: bool = False, reuseport: bool = False
) -> socket.socket:
    sock = socket.socket(af, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if af == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if transparent:
            set_transparent(sock)
        else:
            set_freebind(sock)
        sock.bind((addr, port))
        sock.listen(4096)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def udp_listener(addr: str, port: int, af: socket.AddressFamily) -> socket.socket:
    sock = socket.socket(af, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if af == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        set_freebind(sock)
        sock.bind((addr, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def outgoing(
    af: socket.AddressFamily, kind: socket.SocketKind, bind_to: tuple[str, int] | None
) -> socket.socket:
    """A socket towards a real server; bound transparently to the client's address when asked."""
    sock = socket.socket(af, kind | socket.SOCK_NONBLOCK)  # non-blocking from the start: no ioctl
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if bind_to is not None:
            set_transparent(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(bind_to)  # the client's own port first, as NAT keeps it
            except OSError:
                sock.bind((bind_to[0], 0))
    except BaseException:
        sock.close()
        raise
    return sock
