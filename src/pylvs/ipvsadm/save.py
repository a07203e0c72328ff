"""`ipvsadm -S` / `-Sn`: the rule set as commands that `-R` reads back (spec B8).

Always sorted, no header; thresholds, timeouts and sync daemons are not saved (as in ipvsadm).
"""

from __future__ import annotations

from pylvs.core.snapshot import Snapshot
from pylvs.ipvsadm.grammar import Format
from pylvs.ipvsadm.listing import ordered_services, service_entry
from pylvs.ipvsadm.names import NameResolver


def format_save(snapshot: Snapshot, numeric: bool, names: NameResolver | None = None) -> str:
    """The text of `ipvsadm -S` (numeric=False, names from /etc/hosts and /etc/services) or `-Sn`."""
    if not numeric and names is None:
        names = NameResolver()
    fmt = Format(numeric=numeric)
    return "".join(service_entry(se, fmt, names, rule=True) for se in ordered_services(snapshot, False))
