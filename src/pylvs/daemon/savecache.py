"""The rules file's text, rebuilt only where the rules changed.

Saving after every change means formatting the whole table each time: about 2 s of CPU at 100,000
real servers, for a one-line `pylvsadm -e`. This keeps, per service, the revision of its rules (the
core's VirtualService.rev), the view built from them and the text `ipvsadm -S` prints for it; only
services whose revision changed are rebuilt. The result is
checked against `format_save` itself by the tests (tests/daemon/test_savecache.py), and any surprise in
the ipvsadm helper's building blocks falls back to `format_save`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pylvs.core.director import Director
from pylvs.core.snapshot import DaemonView, ServiceView, Snapshot, make_dest_view
from pylvs.core.types import ServiceKey

_ZERO = (0, 0, 0, 0, 0)


class _Entry:
    """One service's cached rules: its revision (VirtualService.rev), view and text by numeric."""

    __slots__ = ("rev", "texts", "view")

    def __init__(self, rev: int) -> None:
        self.rev = rev
        self.view: ServiceView | None = None  # built only when asked for
        self.texts: dict[bool, str] = {}

    def view_of(self, svc: Any) -> ServiceView:
        if self.view is None:
            self.view = _view(svc)
        return self.view


def _view(svc: Any) -> ServiceView:
    """The service's rules as a view (counters left at zero: the file has none)."""
    dests = tuple(
        make_dest_view(
            str(d.addr),
            d.port,
            int(d.fwd),
            d.weight,
            d.u_threshold,
            d.l_threshold,
            0,
            0,
            0,
            int(d.tun_type),
            d.tun_port,
            int(d.tun_flags),
            _ZERO,
            _ZERO,
        )
        for d in svc.dests
    )
    return ServiceView(
        svc.af,
        int(svc.protocol),
        "" if svc.addr is None else str(svc.addr),
        svc.port,
        svc.fwmark,
        svc.scheduler_name,
        int(svc.flags),
        svc.timeout,
        svc.netmask,
        svc.pe_name,
        dests,
    )


class SaveCache:
    def __init__(self) -> None:
        self._entries: dict[ServiceKey, _Entry] = {}

    def _take(self, entries: dict[ServiceKey, _Entry], svc: Any) -> _Entry:
        """svc's entry from the last round if its rules did not change since, else a new one."""
        e = self._entries.get(svc.key)
        if e is None or e.rev != svc.rev:
            e = _Entry(svc.rev)
        entries[svc.key] = e
        return e

    def snapshot(self, director: Director, daemons: tuple[DaemonView, ...] = ()) -> Snapshot:
        """The rules (no counters) as a Snapshot, reusing the views of unchanged services."""
        entries: dict[ServiceKey, _Entry] = {}
        services = [self._take(entries, svc).view_of(svc) for svc in director.services]
        self._entries = entries
        t = director.timeouts
        return replace(
            Snapshot(), services=tuple(services), timeouts=(t.tcp, t.tcpfin, t.udp), daemons=daemons
        )

    def text(self, director: Director, numeric: bool) -> str:
        """`ipvsadm -S[n]` of the director's rules (what `format(snapshot(director))` gives), written
        from the live objects where pylvs.ipvsadm.live can, and from views (cached) otherwise."""
        if not numeric:
            return self.format(self.snapshot(director), numeric)
        try:
            from pylvs.ipvsadm import live
        except ImportError:
            return self.format(self.snapshot(director), numeric)
        entries: dict[ServiceKey, _Entry] = {}
        parts = []
        for svc in live.ordered(director.services, False):
            e = self._take(entries, svc)
            text = e.texts.get(True)
            if text is None:
                text = live.rule_text(svc)
                if text is None:
                    text = self._format_view(e.view_of(svc), True)
                e.texts[True] = text
            parts.append(text)
        self._entries = entries
        return "".join(parts)

    @staticmethod
    def _format_view(se: ServiceView, numeric: bool) -> str:
        from pylvs.ipvsadm.grammar import Format
        from pylvs.ipvsadm.listing import service_entry

        return service_entry(se, Format(numeric=numeric), None, rule=True)

    def format(self, snap: Snapshot, numeric: bool) -> str:
        """`ipvsadm -S[n]` of `snap` (a snapshot from this cache), formatting only new services."""
        try:
            from pylvs.ipvsadm.grammar import Format
            from pylvs.ipvsadm.listing import ordered_services, service_entry
            from pylvs.ipvsadm.names import NameResolver
        except ImportError:
            from pylvs.ipvsadm.save import format_save

            return format_save(snap, numeric=numeric)
        by_id = {id(e.view): e for e in self._entries.values() if e.view is not None}
        fmt = Format(numeric=numeric)
        names = None if numeric else NameResolver()
        parts = []
        for se in ordered_services(snap, False):
            entry = by_id.get(id(se))
            text = entry.texts.get(numeric) if entry is not None else None
            if text is None:
                text = service_entry(se, fmt, names, rule=True)
                if entry is not None and numeric:  # names may change under us; only cache numeric
                    entry.texts[numeric] = text
            parts.append(text)
        return "".join(parts)
