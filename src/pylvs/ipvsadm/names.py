"""Host and service names, from the files only (/etc/hosts, /etc/services): never DNS.

ipvsadm asks the C library (gethostbyname, gethostbyaddr, getservbyname, getservbyport); on a
machine whose name service is "files" these read exactly these two files, first matching line wins.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pylvs.ipvsadm.cnum import inet_aton, inet_pton6

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

PROTO_NAMES = {6: "tcp", 17: "udp", 132: "sctp"}


def _strip_comment(line: str) -> list[str]:
    return line.split("#", 1)[0].split()


@dataclass
class NameResolver:
    """Looks names up in a hosts file and a services file (read once, lazily)."""

    hosts_path: str = "/etc/hosts"
    services_path: str = "/etc/services"
    hosts_text: str | None = None  # given text wins over the path (tests)
    services_text: str | None = None
    _hosts: list[tuple[IPAddr, list[str]]] | None = field(default=None, init=False, repr=False)
    _services: list[tuple[str, int, str, list[str]]] | None = field(default=None, init=False, repr=False)

    @staticmethod
    def _read(path: str, text: str | None) -> str:
        if text is not None:
            return text
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def _host_entries(self) -> list[tuple[IPAddr, list[str]]]:
        if self._hosts is None:
            entries: list[tuple[IPAddr, list[str]]] = []
            for line in self._read(self.hosts_path, self.hosts_text).splitlines():
                words = _strip_comment(line)
                if len(words) < 2:
                    continue
                addr: IPAddr | None = inet_pton6(words[0]) if ":" in words[0] else None
                if addr is None:
                    try:
                        addr = ipaddress.IPv4Address(words[0])
                    except ValueError:
                        continue
                entries.append((addr, words[1:]))
            self._hosts = entries
        return self._hosts

    def _service_entries(self) -> list[tuple[str, int, str, list[str]]]:
        if self._services is None:
            entries: list[tuple[str, int, str, list[str]]] = []
            for line in self._read(self.services_path, self.services_text).splitlines():
                words = _strip_comment(line)
                if len(words) < 2 or "/" not in words[1]:
                    continue
                port_s, _, proto = words[1].partition("/")
                if not port_s.isdigit():
                    continue
                entries.append((words[0], int(port_s), proto, words[2:]))
            self._services = entries
        return self._services

    # -- what ipvsadm asks ------------------------------------------------------------------
    def host_to_ipv4(self, name: str) -> ipaddress.IPv4Address | None:
        """gethostbyname(): the first IPv4 line naming `name` (names compare case-insensitively)."""
        if not name or inet_aton(name) is not None:
            return inet_aton(name) if name else None
        low = name.lower()
        for addr, names in self._host_entries():
            if addr.version == 4 and any(n.lower() == low for n in names):
                assert isinstance(addr, ipaddress.IPv4Address)
                return addr
        return None

    def addr_to_host(self, addr: IPAddr) -> str | None:
        """gethostbyaddr(): the official (first) name of the first line with this address."""
        for a, names in self._host_entries():
            if a == addr:
                return names[0]
        return None

    def service_to_port(self, name: str, protocol: int) -> int | None:
        """getservbyname(name, proto) for TCP, UDP and SCTP; None for any other protocol."""
        proto = PROTO_NAMES.get(protocol)
        if proto is None:
            return None
        for official, port, p, aliases in self._service_entries():
            if p == proto and (official == name or name in aliases):
                return port
        return None

    def port_to_service(self, port: int, protocol: int) -> str | None:
        proto = PROTO_NAMES.get(protocol)
        if proto is None:
            return None
        for official, p_port, p, _ in self._service_entries():
            if p == proto and p_port == port:
                return official
        return None


def default_resolver() -> NameResolver:
    return NameResolver()
