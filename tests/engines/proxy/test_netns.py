"""The proxy engine in network namespaces (root only): transparent mode and fwmark + persistence."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .nslab import CLIENTS, RS, VIP, Lab, is_root

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not is_root(), reason="needs root for network namespaces"),
]


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    try:
        lab.build()
        yield lab
    finally:
        lab.close()


def test_transparent_mode_shows_the_client_address_at_the_real_server(lab: Lab) -> None:
    lab.transparent_routing()
    lab.backends([80])
    lab.director(
        {
            "services": [
                {
                    "tcp": f"{VIP}:80",
                    "sched": "rr",
                    "dests": [[RS["rs1"], 80, "masq"], [RS["rs2"], 80, "masq"]],
                }
            ]
        }
    )
    answers = [lab.request(CLIENTS[0], 80) for _ in range(4)]
    names = [a.split()[0] for a in answers]
    peers = [a.split()[1].split(":")[0] for a in answers]
    assert set(names) == {"rs1", "rs2"}, answers
    assert peers == [CLIENTS[0]] * 4, [*answers, lab.log("director")]


def test_fwmark_persistence_keeps_ports_80_and_443_on_one_server(lab: Lab) -> None:
    # The seed's fwmark lab: mark 66 on VIP ports 80 and 443, one TPROXY listener for the mark.
    lab.nft(
        "d",
        "table ip plvm { chain pre { type filter hook prerouting priority mangle; policy accept; "
        f"ip daddr {VIP} tcp dport {{ 80, 443 }} meta mark set 66; "
        "meta mark 66 meta l4proto tcp tproxy to :9999; }; }",
    )
    lab.backends([80, 443])
    lab.director(
        {
            "tproxy_port": 9999,
            "services": [
                {
                    "fwmark": 66,
                    "sched": "rr",
                    "persistent": 360,
                    "dests": [[RS["rs1"], 0, "fullnat"], [RS["rs2"], 0, "fullnat"]],
                }
            ],
        }
    )
    assert lab.run("d", ["sysctl", "-n", "net.ipv4.tcp_fwmark_accept"]).strip() == "1"
    seen: dict[str, set[str]] = {c: set() for c in CLIENTS}
    ports: dict[str, set[str]] = {c: set() for c in CLIENTS}
    for _ in range(3):
        for client in CLIENTS:
            for port in (80, 443):
                name, _peer, local = lab.request(client, port).split()
                seen[client].add(name)
                ports[client].add(local)
    assert all(len(s) == 1 for s in seen.values()), seen  # one server per client, both ports
    assert seen[CLIENTS[0]] != seen[CLIENTS[1]], seen  # and rr spread the two clients
    assert all(p == {"80", "443"} for p in ports.values()), ports


def test_transparent_udp_flows_show_the_client_address(lab: Lab) -> None:
    lab.transparent_routing()
    lab.udp_backends(53)
    lab.director(
        {
            "services": [
                {
                    "udp": f"{VIP}:53",
                    "sched": "rr",
                    "dests": [[RS["rs1"], 53, "masq"], [RS["rs2"], 53, "masq"]],
                }
            ]
        }
    )
    answers = lab.udp_requests(CLIENTS[1], 53, 4)
    assert {a.split()[0] for a in answers} == {"rs1", "rs2"}, answers
    assert all(a.split()[1].startswith(CLIENTS[1] + ":") for a in answers), answers
