"""The seed's lab networks, built in fresh namespaces with the article's addresses.

NAT (2.2) and FULLNAT:  client 172.25.254.10 -- director eth0 172.25.254.100 | eth1 192.168.1.100
                        -- switch -- rs1 192.168.1.10, rs2 192.168.1.20 (NAT: gateway .100; FULLNAT: no route
                        to the client at all, the director's address is all they ever see)
DR (2.3) and TUN:       client 172.25.254.10 -- router 172.25.254.100 | 192.168.1.100 -- switch --
                        director 192.168.1.200, rs1 .10, rs2 .20; VIP 192.168.1.220/32 on lo of all three
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pylvs.lab.netns import Netns

CLIENT = "172.25.254.10"
NAT_VIP = "172.25.254.100"
DR_VIP = "192.168.1.220"
DIRECTOR_DIP = "192.168.1.200"
RS = {"rs1": "192.168.1.10", "rs2": "192.168.1.20"}

# IPv6 beside the article's IPv4 (not in the article): the same layout under fd00::/16.
CLIENT6 = "fd00:172:25:254::10"
NAT_VIP6 = "fd00:172:25:254::100"
DR_VIP6 = "fd00:192:168:1::220"
RS6 = {"rs1": "fd00:192:168:1::10", "rs2": "fd00:192:168:1::20"}


@dataclass
class Topology:
    mode: str
    vip: str
    vip6: str = ""
    director: str = "lvs"  # role of the director namespace
    director_ifaces: list[str] = field(default_factory=list)
    router: str | None = None
    rs: dict[str, str] = field(default_factory=lambda: dict(RS))
    director_addr_on_lan: str = ""


def _switch(n: Netns, ports: list[tuple[str, str]]) -> None:
    """A bridge namespace 'sw' with one port per (role, ifname in that role)."""
    n.add("sw")
    n.sh("sw", "ip link add br0 type bridge\nip link set br0 up")
    for i, (role, ifname) in enumerate(ports):
        n.veth("sw", f"p{i}", role, ifname)
        n.sh("sw", f"ip link set p{i} master br0")


def build_nat(n: Netns, fullnat: bool = False) -> Topology:
    for role in ("client", "lvs", "rs1", "rs2"):
        n.add(role)
    n.veth("client", "eth0", "lvs", "eth0")
    _switch(n, [("lvs", "eth1"), ("rs1", "eth0"), ("rs2", "eth0")])
    n.addr("client", "eth0", f"{CLIENT}/24")
    n.sh("client", f"ip route add default via {NAT_VIP}")
    n.addr("lvs", "eth0", f"{NAT_VIP}/24")
    n.addr("lvs", "eth1", "192.168.1.100/24")
    # The article turns forwarding on; the engine's drop table keeps the kernel from forwarding too.
    n.sysctl("lvs", net__ipv4__ip_forward=1)
    n.sh("client", f"ip addr add {CLIENT6}/64 dev eth0 nodad\nip -6 route add default via {NAT_VIP6}")
    n.sh(
        "lvs", f"ip addr add {NAT_VIP6}/64 dev eth0 nodad\nip addr add fd00:192:168:1::100/64 dev eth1 nodad"
    )
    for role, ip in RS.items():
        n.addr(role, "eth0", f"{ip}/24")
        n.sh(role, f"ip addr add {RS6[role]}/64 dev eth0 nodad")
        if not fullnat:
            n.sh(
                role,
                "ip route add default via 192.168.1.100\nip -6 route add default via fd00:192:168:1::100",
            )
    return Topology(
        mode="fullnat" if fullnat else "nat",
        vip=NAT_VIP,
        vip6=NAT_VIP6,
        director_ifaces=["eth0", "eth1"],
        director_addr_on_lan="192.168.1.100",
    )


def build_dr(n: Netns, mode: str = "dr") -> Topology:
    for role in ("client", "router", "lvs", "rs1", "rs2"):
        n.add(role)
    n.veth("client", "eth0", "router", "eth0")
    _switch(n, [("router", "eth1"), ("lvs", "eth0"), ("rs1", "eth0"), ("rs2", "eth0")])
    n.addr("client", "eth0", f"{CLIENT}/24")
    n.sh("client", "ip route add default via 172.25.254.100")
    n.addr("router", "eth0", "172.25.254.100/24")
    n.addr("router", "eth1", "192.168.1.100/24")
    n.sysctl("router", net__ipv4__ip_forward=1)
    n.addr("lvs", "eth0", f"{DIRECTOR_DIP}/24")
    n.sh("lvs", f"ip addr add {DR_VIP}/32 dev lo\nip route add default via 192.168.1.100")
    # IPv6: Linux answers neighbour solicitations only for addresses on the asking interface, so the
    # director holds the VIP on eth0 and the real servers on lo (IPv6's own "arp_ignore").
    n.sh("client", f"ip addr add {CLIENT6}/64 dev eth0 nodad\nip -6 route add default via {NAT_VIP6}")
    n.sh(
        "router",
        f"ip addr add {NAT_VIP6}/64 dev eth0 nodad\nip addr add fd00:192:168:1::100/64 dev eth1 nodad",
    )
    n.sysctl("router", net__ipv6__conf__all__forwarding=1)
    n.sh(
        "lvs", f"ip addr add fd00:192:168:1::200/64 dev eth0 nodad\nip addr add {DR_VIP6}/128 dev eth0 nodad"
    )
    for role, ip in RS.items():
        n.addr(role, "eth0", f"{ip}/24")
        n.sh(role, "ip route add default via 192.168.1.100")
        n.sh(
            role,
            f"ip addr add {RS6[role]}/64 dev eth0 nodad\nip -6 route add default via fd00:192:168:1::100",
        )
        if mode == "dr":
            n.sh(role, f"ip addr add {DR_VIP6}/128 dev lo")
    return Topology(
        mode=mode,
        vip=DR_VIP,
        vip6=DR_VIP6 if mode == "dr" else "",
        router="router",
        director_ifaces=["eth0"],
        director_addr_on_lan=DIRECTOR_DIP,
    )
