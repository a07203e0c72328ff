"""A small network-namespace lab for the proxy engine's tests (root only; unique names; always removed).

    client 172.25.254.10 (.11) -- eth0 172.25.254.100 [director] eth1 192.168.1.100 -- br0 -- rs1 .10, rs2 .20

The real servers' default route is the director (NAT as the real servers see it). Nothing here touches
the root namespace: veths are created inside the namespaces.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def is_root() -> bool:
    return os.geteuid() == 0


class Lab:
    def __init__(self) -> None:
        self.prefix = "plv" + secrets.token_hex(3)
        self.names: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[str, Path] = {}

    def ns(self, role: str) -> str:
        return f"{self.prefix}{role}"

    def sh(self, role: str, *cmds: str, check: bool = True) -> str:
        out = ""
        for cmd in cmds:
            p = subprocess.run(
                ["ip", "netns", "exec", self.ns(role), *cmd.split()],
                capture_output=True,
                text=True,
                timeout=20,
            )
            if check and p.returncode != 0:
                raise RuntimeError(f"[{role}] {cmd}: {p.stderr.strip()}")
            out += p.stdout
        return out

    def run(self, role: str, argv: list[str], timeout: float = 15) -> str:
        p = subprocess.run(
            ["ip", "netns", "exec", self.ns(role), *argv], capture_output=True, text=True, timeout=timeout
        )
        if p.returncode != 0:
            raise RuntimeError(f"[{role}] {argv[:3]}: {p.stderr.strip()[-500:]}")
        return p.stdout

    def spawn(self, role: str, argv: list[str], tag: str) -> subprocess.Popen[bytes]:
        log = Path(f"/tmp/{self.prefix}-{tag}.log")
        self.logs[tag] = log
        with open(log, "wb") as f:
            p = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(role), *argv],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.append(p)
        return p

    def log(self, tag: str) -> str:
        try:
            return self.logs[tag].read_text()
        except (KeyError, OSError):
            return ""

    def build(self) -> None:
        for role in ("c", "d", "r1", "r2"):
            subprocess.run(["ip", "netns", "add", self.ns(role)], check=True, timeout=10)
            self.names.append(self.ns(role))
            self.sh(role, "ip link set lo up")

        def veth(a: str, a_if: str, b: str, b_if: str) -> None:
            subprocess.run(
                [
                    "ip",
                    "-n",
                    self.ns(a),
                    "link",
                    "add",
                    a_if,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    b_if,
                    "netns",
                    self.ns(b),
                ],
                check=True,
                timeout=10,
            )
            self.sh(a, f"ip link set {a_if} up")
            self.sh(b, f"ip link set {b_if} up")

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
            if self.procs[-1].poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("director did not start: " + self.log("director")[-2000:])

    def wait_tcp(self, role: str, addr: str, port: int) -> None:
        code = (
            "import socket,time,sys\nfor _ in range(200):\n try:\n"
            f"  socket.create_connection(('{addr}',{port}),0.5).close(); sys.exit(0)\n"
            " except OSError: time.sleep(0.05)\nsys.exit(1)"
        )
        self.run(role, [sys.executable, "-c", code], timeout=20)

    def request(self, src: str, port: int, dst: str = VIP) -> str:
        return self.run("c", [sys.executable, "-c", CLIENT, src, dst, str(port)]).strip()

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(2)
        for name in reversed(self.names):
            pids = subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True
            ).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        for log in self.logs.values():
            log.unlink(missing_ok=True)
