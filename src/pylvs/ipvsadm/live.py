"""`-Sn` and the plain `-L`/`-Ln` table straight from a Director's live objects.

pylvsd lists and saves its own rules. Going through views costs a view object per real server and,
for ipvsadm's sort, parsing each address back from its text; on a 100,000-server table that is most
of the time. Here the sort keys come from the addresses' integers and each line is one f-string.

Only the shapes whose text is plain are written here: IPv4 services by address without persistence,
one-packet, scheduler flags or a persistence engine, and (for -S) servers without tunnel options.
For any other service the caller's `fallback(svc)` formats it from its view, so the output is always
exactly ipvsadm's (tests/ipvsadm/test_live.py compares both ways on random tables).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from ipaddress import IPv4Address
from typing import Any

from pylvs.core.service import RealServer, VirtualService, addr_int, addr_text
from pylvs.core.types import AF_INET, Fwd, SvcFlags
from pylvs.ipvsadm.listing import _FWD_NAME_OF, _FWD_SWITCH_OF, _PROTO_LABEL, _PROTO_OPTION
from pylvs.ipvsadm.sort import Words, sort_keyed_dests, sort_keyed_services

_PLAIN_MASK = int(
    SvcFlags.PERSISTENT | SvcFlags.ONEPACKET | SvcFlags.SCHED1 | SvcFlags.SCHED2 | SvcFlags.SCHED3
)
_TUNNEL = int(Fwd.TUNNEL)
_HALF = 1 << 31
_DEST_LINE = "  -> %-28s %-7s %-6d %-10d %-10d\n"

Fallback = Callable[[VirtualService], str]


def _words(addr: Any) -> Words:
    """ipvsadm's four host-order words of an address (IPv4 in the first)."""
    if addr is None:
        return (0, 0, 0, 0)
    if type(addr) is IPv4Address:
        return (addr_int(addr), 0, 0, 0)
    v = int(addr)
    return ((v >> 96) & 0xFFFFFFFF, (v >> 64) & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF, v & 0xFFFFFFFF)


def ordered(services: Iterable[VirtualService], nosort: bool) -> list[VirtualService]:
    """Services in the order ipvsadm lists them (the kernel's, or sorted)."""
    svcs = list(services)
    if nosort:
        return svcs
    keyed = []
    for s in svcs:
        k = s.key  # its fields directly (the service's own af/protocol/... are properties)
        keyed.append(((k.fwmark, k.af, int(k.protocol), _words(k.addr), k.port), s))
    return sort_keyed_services(keyed)


def _ordered_dests(svc: VirtualService, nosort: bool) -> list[RealServer]:
    dests = svc.dests
    if nosort or len(dests) < 2:
        return dests
    if all(type(d.addr) is IPv4Address for d in dests):
        keyed = [((addr_int(d.addr), d.port), d) for d in dests]
        ints = [k[0] for k, _ in keyed]
        if max(ints) - min(ints) < _HALF:  # no comparison of ipvsadm's can wrap: its order is the plain one
            keyed.sort(key=_first)
            return [d for _, d in keyed]
    return sort_keyed_dests([((d.af, _words(d.addr), d.port), d) for d in dests])


def _first(item: tuple[tuple[int, int], RealServer]) -> tuple[int, int]:
    return item[0]


def _plain_service(svc: VirtualService) -> bool:
    return (
        not svc.fwmark
        and svc.af == AF_INET
        and not int(svc.flags) & _PLAIN_MASK
        and not svc.pe_name
        and int(svc.protocol) in _PROTO_OPTION
    )


def rule_text(svc: VirtualService) -> str | None:
    """The -Sn lines of one service, or None when its shape is not one done here."""
    if not _plain_service(svc) or any(d.af != AF_INET or int(d.fwd) == _TUNNEL for d in svc.dests):
        return None
    name = f"{_PROTO_OPTION[int(svc.protocol)]} {addr_text(svc.addr)}:{svc.port}"  # type: ignore[arg-type]
    lines = [f"-A {name} -s {svc.scheduler_name}\n"]
    lines.extend(
        f"-a {name} -r {addr_text(d.addr)}:{d.port} {_FWD_SWITCH_OF.get(int(d.fwd), '(null)')} -w {d.weight}\n"
        for d in _ordered_dests(svc, False)
    )
    return "".join(lines)


def list_text(svc: VirtualService, nosort: bool) -> str | None:
    """The plain -Ln lines of one service, or None when its shape is not one done here."""
    if not _plain_service(svc) or any(d.af != AF_INET for d in svc.dests):
        return None
    head = f"{_PROTO_LABEL[int(svc.protocol)]:<4} {addr_text(svc.addr)}:{svc.port}"[:33]  # type: ignore[arg-type]
    lines = [f"{head} {svc.scheduler_name}\n"]
    name = _FWD_NAME_OF.get
    for d in _ordered_dests(svc, nosort):
        inact = d.total - d.activeconns
        # %-formatting: the same text as the views' f-strings, measurably cheaper per line
        lines.append(
            _DEST_LINE
            % (
                f"{addr_text(d.addr)}:{d.port}"[:28],
                name(int(d.fwd), "(null)"),
                d.weight,
                d.activeconns,
                inact if inact > 0 else 0,
            )
        )
    return "".join(lines)


def list_table(services: Iterable[VirtualService], nosort: bool, fallback: Fallback) -> str:
    """The service entries of the plain numeric listing (without its three title lines)."""
    out = []
    for svc in ordered(services, nosort):
        text = list_text(svc, nosort)
        out.append(text if text is not None else fallback(svc))
    return "".join(out)
