"""Packet counters for the labs' path checks: an nftables netdev table of our own in a namespace, one
counter per (interface, label), read back as numbers. Independent of the engine's own figures, so a
lab can prove where packets went (e.g. DR: no reply ever reaches the director)."""

from __future__ import annotations

import re
import subprocess

from pylvs.lab.netns import Netns

TABLE = "plvprobe"
_LINE = re.compile(r'counter packets (\d+) bytes (\d+) comment "([^"]+)"')


class Probe:
    def __init__(self, n: Netns, role: str) -> None:
        self.n = n
        self.role = role
        self.rules: dict[str, list[str]] = {}  # ifname -> rules

    def count(self, ifname: str, label: str, match: str) -> None:
        self.rules.setdefault(ifname, []).append(f'{match} counter comment "{ifname}:{label}"')

    def install(self) -> None:
        lines = [f"table netdev {TABLE} {{"]
        for i, (ifname, rules) in enumerate(self.rules.items()):
            lines.append(f"  chain c{i} {{")
            lines.append(f'    type filter hook ingress device "{ifname}" priority -10;')
            lines.extend(f"    {r}" for r in rules)
            lines.append("  }")
        lines.append("}")
        p = subprocess.run(
            ["ip", "netns", "exec", self.n.ns(self.role), "nft", "-f", "-"],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            timeout=10,
        )
        if p.returncode != 0:
            raise RuntimeError(f"probe in {self.role}: {p.stderr.strip()}")

    def read(self) -> dict[str, int]:
        """Packets per "ifname:label"."""
        out = self.n.run(self.role, ["nft", "list", "table", "netdev", TABLE], check=False).stdout
        return {m.group(3): int(m.group(1)) for m in _LINE.finditer(out)}

    def total(self, label: str) -> int:
        return sum(v for k, v in self.read().items() if k.endswith(":" + label))
