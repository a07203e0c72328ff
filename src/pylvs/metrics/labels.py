"""Label values exactly as node_exporter's ipvs collector derives them from /proc/net/ip_vs.

node_exporter reads /proc/net/ip_vs through procfs: an address service gives its address (Go's
net.IP text), its port and the protocol name; a mark service gives proto "FWM", an empty address,
port 0 and the mark as /proc prints it (%08X).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from pylvs.core.types import AF_INET6

_PROTO = {0: "IP", 6: "TCP", 17: "UDP", 132: "SCTP"}


@lru_cache(maxsize=65536)
def go_ip(addr: str) -> str:
    """An address as Go's net.IP.String() prints it: an IPv4-mapped IPv6 address as dotted quad."""
    if not addr:
        return ""
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def proto_label(protocol: int, fwmark: int) -> str:
    return "FWM" if fwmark else _PROTO.get(protocol, str(protocol))


def mark_label(fwmark: int) -> str:
    return f"{fwmark:08X}" if fwmark else ""


def escape(value: str) -> str:
    """A label value escaped for the text exposition format."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def service_id(af: int, protocol: int, addr: str, port: int, fwmark: int) -> str:
    """A service as one short string, as ipvsadm names it: "TCP 10.0.0.1:80", "FWM 1", "FWM 1 IPv6"."""
    if fwmark:
        return f"FWM {fwmark}" + (" IPv6" if af == AF_INET6 else "")
    host = f"[{addr}]" if ":" in addr else addr
    return f"{_PROTO.get(protocol, str(protocol))} {host}:{port}"


def dest_id(addr: str, port: int) -> str:
    host = f"[{addr}]" if ":" in addr else addr
    return f"{host}:{port}"


def service_labels(protocol: int, addr: str, port: int, fwmark: int) -> dict[str, str]:
    return {
        "local_address": "" if fwmark else go_ip(addr),
        "local_port": "0" if fwmark else str(port),
        "proto": proto_label(protocol, fwmark),
        "local_mark": mark_label(fwmark),
    }


def backend_labels(
    protocol: int, addr: str, port: int, fwmark: int, raddr: str, rport: int
) -> dict[str, str]:
    """The six labels of node_ipvs_backend_*, in node_exporter's order."""
    svc = service_labels(protocol, addr, port, fwmark)
    return {
        "local_address": svc["local_address"],
        "local_port": svc["local_port"],
        "remote_address": go_ip(raddr),
        "remote_port": str(rport),
        "proto": svc["proto"],
        "local_mark": svc["local_mark"],
    }


def render(labels: dict[str, str]) -> str:
    """Labels as the text between the braces of a sample line."""
    return ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
