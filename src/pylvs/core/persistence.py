"""Persistence (ip_vs_sched_persist): templates that send a client network back to the same server.

A template is an entry with the TEMPLATE flag, keyed by (protocol, masked client address, port 0,
virtual address, virtual port) with the kernel's special cases for FTP, port-0 and fwmark services
(spec §A7). It never carries traffic; the connections it creates point at it (`control`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pylvs.core.addr import mask_addr
from pylvs.core.conn import Connection, make_key
from pylvs.core.pe_sip import PE_NAME as SIP_PE
from pylvs.core.pe_sip import sip_callid
from pylvs.core.service import RealServer, VirtualService
from pylvs.core.sysctl import Sysctls
from pylvs.core.types import Packet, Proto

FTPPORT = 21


@dataclass(frozen=True, slots=True)
class TemplateKey:
    """Where a template is found and what it records (its destination port comes later)."""

    key: int
    uses_service_port: bool  # the packet's port is the service's (and it is not FTP)


def template_key(svc: VirtualService, pkt: Packet) -> TemplateKey:
    """The template key for a packet of a persistent service (spec §A7 table)."""
    snet = mask_addr(pkt.saddr, svc.netmask)
    proto = int(pkt.protocol)
    vaddr = pkt.daddr
    vport = 0
    if pkt.dport == svc.port:
        # non-FTP: (proto, cnet, 0, vaddr, vport); FTP control: vport 0 so data ports share it
        if svc.port != FTPPORT:
            vport = pkt.dport
    elif svc.fwmark:
        # fwmark services: protocol IP and the mark stands in for the virtual address
        proto = int(Proto.IP)
        if pkt.saddr.version == 4:
            vaddr = ipaddress.IPv4Address(svc.fwmark & 0xFFFFFFFF)
        else:
            vaddr = ipaddress.IPv6Address((svc.fwmark & 0xFFFFFFFF) << 96)
    uses_port = pkt.dport == svc.port and svc.port != FTPPORT
    return TemplateKey(make_key(proto, snet, 0, vaddr, vport), uses_port)


def template_usable(tpl: Connection, sysctl: Sysctls) -> bool:
    """ip_vs_check_template: is the template's server still there (and, optionally, not quiescent)?"""
    dest: RealServer = tpl.dest
    if not dest.available:
        return False
    return not (sysctl.expire_quiescent_template and dest.weight == 0)


def conn_dport(svc: VirtualService, pkt: Packet, dest: RealServer) -> int:
    """Port a persistent connection reaches its server on: the server's port only when the packet
    came to the service's own port and the server has one (fwmark and port-0 services keep the
    packet's port)."""
    if pkt.dport == svc.port and dest.port:
        return dest.port
    return pkt.dport


def pe_fill(pe_name: str, pkt: Packet) -> bytes | None:
    """ip_vs_conn_fill_param_persist's engine step: the data a persistence engine adds to the
    template key, or None when the packet cannot have a template (the kernel drops it).
    The sip engine takes the Call-ID of UDP packets only."""
    if pe_name == SIP_PE and pkt.protocol == Proto.UDP:
        return sip_callid(pkt.payload)
    return None
