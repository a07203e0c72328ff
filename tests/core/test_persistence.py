"""Template keys and ports (spec §A7): the kernel's cases for normal, FTP, port-0 and fwmark services."""

from __future__ import annotations

import ipaddress

from pylvs.core.conn import split_key
from pylvs.core.persistence import conn_dport, template_key
from pylvs.core.service import RealServer, VirtualService
from pylvs.core.types import DestConfig, Fwd, Packet, Proto, ServiceConfig, ServiceKey, SvcFlags

ip = ipaddress.ip_address
P = SvcFlags.PERSISTENT


def service(key: ServiceKey, netmask: int = 0xFFFFFFFF) -> VirtualService:
    return VirtualService(key, ServiceConfig("rr", P, 300, netmask), 1)


def pkt(dport: int, proto: Proto = Proto.TCP, client: str = "172.25.254.77") -> Packet:
    return Packet(proto, ip(client), 40000, ip("10.0.0.1"), dport)


def test_normal_service_key_and_ports() -> None:
    svc = service(ServiceKey.for_addr(Proto.TCP, ip("10.0.0.1"), 80), 0xFFFFFF00)
    tk = template_key(svc, pkt(80))
    assert split_key(tk.key) == (6, ip("172.25.254.0"), 0, ip("10.0.0.1"), 80) and tk.uses_service_port
    rs = RealServer(DestConfig(ip("192.168.1.10"), 8080, Fwd.MASQ), svc, 1)
    assert conn_dport(svc, pkt(80), rs) == 8080


def test_ftp_control_and_data_share_vport_zero() -> None:
    svc = service(ServiceKey.for_addr(Proto.TCP, ip("10.0.0.1"), 21))
    a, b = template_key(svc, pkt(21)), template_key(svc, pkt(2000))
    assert a.key == b.key and split_key(a.key)[4] == 0
    assert not a.uses_service_port and not b.uses_service_port
    rs = RealServer(DestConfig(ip("192.168.1.10"), 21, Fwd.MASQ), svc, 1)
    assert conn_dport(svc, pkt(21), rs) == 21 and conn_dport(svc, pkt(2000), rs) == 2000


def test_port_zero_service_keeps_the_packet_port() -> None:
    svc = service(ServiceKey.for_addr(Proto.UDP, ip("10.0.0.1"), 0))
    tk = template_key(svc, pkt(53, Proto.UDP))
    assert split_key(tk.key) == (17, ip("172.25.254.77"), 0, ip("10.0.0.1"), 0)
    rs = RealServer(DestConfig(ip("192.168.1.10"), 0, Fwd.MASQ), svc, 1)
    assert conn_dport(svc, pkt(53, Proto.UDP), rs) == 53


def test_fwmark_template_uses_protocol_ip_and_the_mark_as_address() -> None:
    svc = service(ServiceKey.for_fwmark(66))
    tcp, udp = template_key(svc, pkt(443)), template_key(svc, pkt(53, Proto.UDP))
    assert tcp.key == udp.key  # one template for every protocol and port of the mark
    assert split_key(tcp.key) == (0, ip("172.25.254.77"), 0, ip("0.0.0.66"), 0)
    rs = RealServer(DestConfig(ip("192.168.1.10"), 0, Fwd.MASQ), svc, 1)
    assert conn_dport(svc, pkt(443), rs) == 443
    v6 = VirtualService(ServiceKey.for_fwmark(66, 10), ServiceConfig("rr", P, 300, 64), 1)
    k6 = template_key(v6, Packet(Proto.TCP, ip("2001:db8:1:2::9"), 1, ip("2001:db8::1"), 80))
    assert split_key(k6.key) == (0, ip("2001:db8:1:2::"), 0, ip("0:42::"), 0)
