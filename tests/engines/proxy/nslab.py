"""A small network-namespace lab for the proxy engine's tests (root only; unique names; always removed).

    client 172.25.254.10 (.11) -- eth0 172.25.254.100 [director] eth1 192.168.1.100 -- br0 -- rs1 .10, rs2 .20

The real servers' default route is the director (NAT as the real servers see it). Nothing here touches
the root namespace: veths are created inside the namespaces.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from pylvs.lab.netns import Netns, is_root

__all__ = ["CLIENTS", "RS", "VIP", "Lab", "is_root"]

HERE = Path(__file__).resolve().parent
VIP = "172.25.254.100"
CLIENTS = ("172.25.254.10", "172.25.254.11")
RS = {"rs1": "192.168.1.10", "rs2": "192.168.1.20"}

# A real server: answers each connection with "<name> <peer addr>:<peer port> <local port>\n".
BACKEND = r"""
import socket, sys, threading
name, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(128)
    while True:
        c, peer = s.accept()
        try:
            c.settimeout(5); c.recv(4096)
            c.sendall(f"{name} {peer[0]}:{peer[1]} {port}\n".encode())
        except OSError:
            pass
        c.close()
for p in ports[1:]:
    threading.Thread(target=serve, args=(p,), daemon=True).start()
serve(ports[0])
"""

# A UDP real server: answers each datagram with "<name> <peer addr>:<peer port>".
UDP_BACKEND = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(f"{sys.argv[1]} {peer[0]}:{peer[1]}".encode(), peer)
"""

UDP_CLIENT = r"""
import socket, sys
src, dst, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for _ in range(n):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(1); c.bind((src, 0))
    for attempt in range(5):  # a datagram sent before the real server listened is simply lost
        c.sendto(b"hello", (dst, port))
        try:
            print(c.recvfrom(2048)[0].decode()); break
        except socket.timeout:
            pass
    c.close()
"""

CLIENT = r"""
import socket, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = socket.socket(); c.settimeout(5); c.bind((src, 0)); c.connect((dst, port))
c.sendall(b"hello\n"); print(c.recv(4096).decode().strip()); c.close()
"""


class Lab:
    """The four namespaces above on pylvs.lab.netns.Netns (naming, veths, processes, teardown)."""

    def __init__(self) -> None:
        self.net = Netns()

    def ns(self, role: str) -> str:
        return self.net.ns(role)

    def sh(self, role: str, *cmds: str, check: bool = True) -> str:
        return "".join(self.net.run(role, cmd.split(), check=check, timeout=20).stdout for cmd in cmds)

    def run(self, role: str, argv: list[str], timeout: float = 15) -> str:
        return self.net.run(role, argv, timeout=timeout).stdout

    def spawn(self, role: str, argv: list[str], tag: str) -> subprocess.Popen[bytes]:
        return self.net.spawn(role, argv, log_name=tag)

    def log(self, tag: str) -> str:
        return self.net.log(tag)

    def build(self) -> None:
        for role in ("c", "d", "r1", "r2"):
            self.net.add(role)
        veth = self.net.veth
        veth("c", "eth0", "d", "eth0")
        self.sh("d", "ip link add br0 type bridge", "ip link set br0 up")
        veth("d", "p1", "r1", "eth0")
        veth("d", "p2", "r2", "eth0")
        self.sh("d", "ip link set p1 master br0", "ip link set p2 master br0")
        self.sh("c", f"ip addr add {CLIENTS[0]}/24 dev eth0", f"ip addr add {CLIENTS[1]}/24 dev eth0")
        self.sh("c", f"ip route add default via {VIP}")
        self.sh("d", f"ip addr add {VIP}/24 dev eth0", "ip addr add 192.168.1.100/24 dev br0")
        self.sh(
            "d",
            "sysctl -q -w net.ipv4.conf.all.rp_filter=0",
            "sysctl -q -w net.ipv4.conf.default.rp_filter=0",
        )
        for role, ip in (("r1", RS["rs1"]), ("r2", RS["rs2"])):
            self.sh(role, f"ip addr add {ip}/24 dev eth0", "ip route add default via 192.168.1.100")

    def transparent_routing(self) -> None:
        """Replies to the client's address reach the director's transparent sockets (dataplane.md D)."""
        self.sh("d", "ip rule add fwmark 1 lookup 100", "ip route add local 0.0.0.0/0 dev lo table 100")
        self.nft(
            "d",
            "table ip plvt { chain pre { type filter hook prerouting priority mangle; "
            "policy accept; socket transparent 1 meta mark set 1; }; }",
        )

    def nft(self, role: str, ruleset: str) -> None:
        self.run(role, ["nft", ruleset])

    def backends(self, ports: list[int]) -> None:
        for role, name in (("r1", "rs1"), ("r2", "rs2")):
            self.spawn(role, [sys.executable, "-c", BACKEND, name, *map(str, ports)], name)
        for ip in RS.values():
            self.wait_tcp("d", ip, ports[0])

    def udp_backends(self, port: int) -> None:
        for role, name in (("r1", "rs1"), ("r2", "rs2")):
            self.spawn(role, [sys.executable, "-c", UDP_BACKEND, name, str(port)], name + "-udp")

    def udp_requests(self, src: str, port: int, n: int) -> list[str]:
        return self.run("c", [sys.executable, "-c", UDP_CLIENT, src, VIP, str(port), str(n)]).split("\n")[:n]

    def director(self, config: dict[str, object]) -> None:
        argv = [sys.executable, str(HERE / "nsdirector.py"), json.dumps(config)]
        self.spawn("d", argv, "director")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if "READY" in self.log("director"):
                return
            if self.net.procs[-1].poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("director did not start: " + self.log("director")[-2000:])

    def wait_tcp(self, role: str, addr: str, port: int) -> None:
        self.net.wait_tcp(role, addr, port)

    def request(self, src: str, port: int, dst: str = VIP) -> str:
        return self.run("c", [sys.executable, "-c", CLIENT, src, dst, str(port)]).strip()

    def close(self) -> None:
        self.net.close()
