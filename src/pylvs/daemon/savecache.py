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

_Entry = tuple[int, ServiceView | None, dict[bool, str]]  # fingerprint, view, text by numeric


_ZERO = (0, 0, 0, 0, 0)


def _fingerprint(svc: Any) -> int:
    """Changes whenever the service's rules do: the core renumbers `rev` on every such change, from
    one process-wide counter (so a service deleted and added again never repeats an old number)."""
    rev: int = svc.rev
    return rev


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

    def snapshot(self, director: Director, daemons: tuple[DaemonView, ...] = ()) -> Snapshot:
        """The rules (no counters) as a Snapshot, reusing the views of unchanged services."""
        entries: dict[ServiceKey, _Entry] = {}
        old = self._entries
        services = []
        for svc in director.services:
            fp = _fingerprint(svc)
            hit = old.get(svc.key)
            if hit is None or hit[0] != fp:
                hit = (fp, _view(svc), {})
            elif hit[1] is None:  # cached by text() without a view
                hit = (fp, _view(svc), hit[2])
            entries[svc.key] = hit
            view = hit[1]
            assert view is not None
            services.append(view)
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
        old = self._entries
        parts = []
        for svc in live.ordered(director.services, False):
            fp = _fingerprint(svc)
            hit = old.get(svc.key)
            if hit is None or hit[0] != fp:
                hit = (fp, None, {})
            entries[svc.key] = hit
            text = hit[2].get(True)
            if text is None:
                text = live.rule_text(svc)
                if text is None:
                    view = hit[1] or _view(svc)
                    hit = (fp, view, hit[2])
                    entries[svc.key] = hit
                    text = self._format_view(view, True)
                hit[2][True] = text
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
        by_id = {id(e[1]): e for e in self._entries.values()}
        fmt = Format(numeric=numeric)
        names = None if numeric else NameResolver()
        parts = []
        for se in ordered_services(snap, False):
            entry = by_id.get(id(se))
            text = entry[2].get(numeric) if entry is not None else None
            if text is None:
                text = service_entry(se, fmt, names, rule=True)
                if entry is not None and numeric:  # names may change under us; only cache numeric
                    entry[2][numeric] = text
            parts.append(text)
        return "".join(parts)
