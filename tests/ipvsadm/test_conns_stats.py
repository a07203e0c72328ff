"""Golden tests for the listings that need real traffic: -c (connections), --stats, --rate.

tests/data/oracle/ipvsadm/conns/conns.out was taken in the oracle VM with real TCP connections
(conns.sh): /proc/net/ip_vs_conn and every listing of it. The connections and counters are read
back from the capture (the /proc table, the --exact numbers), handed to our formatters as the
views a backend gives, and the text must equal ipvsadm's.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace

from pylvs.core.director import Director
from pylvs.core.snapshot import ConnView, Snapshot
from pylvs.ipvsadm.backend import LocalBackend
from pylvs.ipvsadm.grammar import Format
from pylvs.ipvsadm.listing import list_all, list_connections
from pylvs.ipvsadm.names import NameResolver
from pylvs.ipvsadm.run import run_ipvsadm

from .replay import DATA, OUT

CAPTURE = (DATA / "conns" / "conns.out").read_text()
NAMES = NameResolver(
    hosts_text=(OUT / "hosts.orig").read_text(), services_text=(OUT / "services").read_text()
)
PROTOS = {"TCP": 6, "UDP": 17, "SCTP": 132, "IP": 0}


def sections() -> list[tuple[str, str]]:
    parts = re.split(r"^=== (.*)\n", CAPTURE, flags=re.M)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def section(name: str, nth: int = 0) -> str:
    return [body for title, body in sections() if title == name][nth]


def conns_from_proc(text: str) -> list[ConnView]:
    conns = []
    for line in text.splitlines()[1:]:
        w = line.split()

        def a(h: str) -> str:
            return str(ipaddress.IPv4Address(int(h, 16)))

        conns.append(
            ConnView(
                protocol=PROTOS[w[0]],
                caddr=a(w[1]),
                cport=int(w[2], 16),
                vaddr=a(w[3]),
                vport=int(w[4], 16),
                daddr=a(w[5]),
                dport=int(w[6], 16),
                state=w[7],
                expires=int(w[8]),
                pe_name=w[9] if len(w) > 9 else "",
                pe_data=w[10] if len(w) > 10 else "",
                template=w[2] == "0000",
            )
        )
    return conns


def test_connection_listings() -> None:
    conns = conns_from_proc(section("cat /proc/net/ip_vs_conn"))
    assert len(conns) == 12
    assert list_connections(conns, True, False, NAMES) == section("ipvsadm -Lnc")
    assert list_connections(conns, False, False, NAMES) == section("ipvsadm -Lc")
    assert list_connections(conns, True, True, NAMES) == section("ipvsadm -Lnc --persistent-conn")


def _table() -> Snapshot:
    b = LocalBackend(Director(), lambda: 0.0)
    for line in (
        "-A -t 172.25.254.100:80 -s rr",
        "-a -t 172.25.254.100:80 -r 192.168.1.10:80 -m -w 2",
        "-a -t 172.25.254.100:80 -r 192.168.1.20:80 -m -w 1",
        "-A -t 172.25.254.100:81 -s rr -p 60",
        "-a -t 172.25.254.100:81 -r 192.168.1.10:80 -m",
        "-A -f 66 -s rr -p 120",
        "-a -f 66 -r 192.168.1.20:80 -m",
    ):
        assert run_ipvsadm(b, line.split()).code == 0
    return b.snapshot()


def _numbers(listing: str) -> list[tuple[int, ...]]:
    rows = []
    for line in listing.splitlines()[3:]:
        rows.append(tuple(int(x) for x in line.split()[-5:]))
    return rows


def _with_counters(snap: Snapshot, rows: list[tuple[int, ...]], field: str) -> Snapshot:
    it = iter(rows)
    services = []
    for se in snap.services:  # listing order == this order here (sorted input, all transitive)
        svc_row = next(it)
        dests = tuple(replace(d, **{field: next(it)}) for d in sorted(se.dests, key=lambda d: d.addr))
        services.append(replace(se, dests=dests, **{field: svc_row}))
    return replace(snap, services=tuple(services))


def test_stats_listings() -> None:
    exact = section("ipvsadm -Ln --stats --exact")
    snap = _with_counters(_table(), _numbers(exact), "stats")
    assert list_all(snap, Format(numeric=True, stats=True, exact=True), NAMES) == exact
    assert list_all(snap, Format(numeric=True, stats=True), NAMES) == section("ipvsadm -Ln --stats")
    assert list_all(snap, Format(stats=True), NAMES) == section("ipvsadm -L --stats")
    assert list_all(snap, Format(numeric=True, stats=True, exact=True), NAMES) == section(
        "ipvsadm -Ln --stats -X"
    )


def test_rate_listing() -> None:
    rate = section("ipvsadm -Ln --rate")
    snap = _with_counters(_table(), _numbers(rate), "rates")
    assert list_all(snap, Format(numeric=True, rate=True), NAMES) == rate


def test_counter_listings_of_connections() -> None:
    # Active/inactive/persistent counts come from the connection table: check the formatter with
    # the capture's own numbers.
    listing = section("ipvsadm -Ln --persistent-conn")
    snap = _table()
    counts = {
        ("172.25.254.100:80", "192.168.1.10"): (0, 2, 0),
        ("172.25.254.100:80", "192.168.1.20"): (0, 3, 0),
    }
    counts[("172.25.254.100:81", "192.168.1.10")] = (0, 2, 2)
    counts[("66", "192.168.1.20")] = (0, 2, 1)
    services = []
    for se in snap.services:
        sid = str(se.fwmark) if se.fwmark else f"{se.addr}:{se.port}"
        dests = tuple(
            replace(d, activeconns=c[0], inactconns=c[1], persistconns=c[2])
            for d in se.dests
            for c in [counts[(sid, d.addr)]]
        )
        services.append(replace(se, dests=dests))
    snap = replace(snap, services=tuple(services))
    assert list_all(snap, Format(numeric=True, persistent_conn=True), NAMES) == listing
    assert list_all(snap, Format(numeric=True), NAMES) == section("ipvsadm -Ln")
    assert list_all(snap, Format(numeric=True, thresholds=True), NAMES) == section("ipvsadm -Ln --thresholds")
