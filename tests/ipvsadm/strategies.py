"""Hypothesis strategies: random rule sets as ipvsadm command lines.

Addresses are drawn where ipvsadm's wrap-around comparator is a consistent order (IPv4 below
128.0.0.0, IPv6 words below 2**31, fwmarks below 2**31): elsewhere the sort order depends on the
kernel's list order, which a restore changes, for real ipvsadm as for us.
"""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

SCHEDULERS = ["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"]


@st.composite
def ipv4(draw: st.DrawFn) -> str:
    return str(ipaddress.IPv4Address(draw(st.integers(0x01000001, 0x7EFFFFFE))))


@st.composite
def ipv6(draw: st.DrawFn) -> str:
    words = [0x20010DB8] + [draw(st.integers(0, 0x7FFFFFFF)) for _ in range(3)]
    v = (words[0] << 96) | (words[1] << 64) | (words[2] << 32) | max(words[3], 1)
    return ipaddress.IPv6Address(v).compressed


@st.composite
def service_spec(draw: st.DrawFn) -> tuple[str, bool, bool, str]:
    """(-t/-u/--sctp-service/-f spec, is_v6, is_fwmark, protocol word)."""
    kind = draw(st.sampled_from(["-t", "-u", "--sctp-service", "-f"]))
    v6 = draw(st.booleans())
    if kind == "-f":
        mark = draw(st.integers(1, 0x7FFFFFFF))
        return (f"-f {mark}" + (" -6" if v6 else ""), v6, True, kind)
    port = draw(st.integers(0, 65535))
    addr = draw(ipv6()) if v6 else draw(ipv4())
    host = f"[{addr}]" if v6 else addr
    return (f"{kind} {host}:{port}", v6, False, kind)


@st.composite
def rule_set(draw: st.DrawFn) -> list[str]:
    """Command lines (without the program name) that build a random table."""
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        spec, v6, fwmark, kind = draw(service_spec())
        sched = draw(st.sampled_from(SCHEDULERS))
        line = f"-A {spec} -s {sched}"
        persistent = draw(st.booleans()) or spec.endswith(":0")
        if persistent:
            line += " -p" + draw(st.sampled_from(["", " 1", " 360", " 2678400", " 77"]))
            if draw(st.booleans()):
                line += " -M " + (
                    str(draw(st.integers(1, 128)))
                    if v6
                    else str(ipaddress.IPv4Address((0xFFFFFFFF << draw(st.integers(0, 32))) & 0xFFFFFFFF))
                )
        if draw(st.booleans()):
            line += " --pe sip"
        if (fwmark or kind == "-u") and draw(st.booleans()):
            line += " -o"
        if draw(st.booleans()):
            pool = {"sh": ["sh-fallback", "sh-port"], "mh": ["mh-fallback", "mh-port"]}.get(
                sched, ["flag-1", "flag-2", "flag-3"]
            )
            flags = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
            line += " -b " + ",".join(flags)
        lines.append(line)
        for _ in range(draw(st.integers(0, 4))):
            fwd = draw(st.sampled_from(["-m", "-g", "-i", "--fullnat"]))
            other_family = fwd == "-i" and draw(st.booleans())
            d_v6 = v6 != other_family
            addr = draw(ipv6()) if d_v6 else draw(ipv4())
            port = draw(st.integers(0, 65535))
            host = f"[{addr}]:{port}" if d_v6 else f"{addr}:{port}"
            dline = f"-a {spec} -r {host} {fwd} -w {draw(st.integers(0, 2147483647))}"
            if fwd == "-i":
                tun = draw(st.sampled_from(["", "ipip", "gue", "gre"]))
                if tun == "ipip":
                    dline += " --tun-type ipip"
                elif tun == "gue":
                    dline += f" --tun-type gue --tun-port {draw(st.integers(1, 65535))}"
                    dline += draw(st.sampled_from(["", " --tun-nocsum", " --tun-csum", " --tun-remcsum"]))
                elif tun == "gre":
                    dline += " --tun-type gre" + draw(st.sampled_from(["", " --tun-nocsum", " --tun-csum"]))
            if draw(st.booleans()):
                dline += f" -x {draw(st.integers(0, 1000))}"
            lines.append(dline)
    return lines


WORDS = [
    "-A", "-E", "-D", "-C", "-R", "-S", "-a", "-e", "-d", "-L", "-l", "-Z", "-h", "-v", "--set",
    "--start-daemon", "--stop-daemon", "master", "backup", "-t", "-u", "--sctp-service", "-f", "-6",
    "-s", "rr", "wlc", "sh", "mh", "nosuch", "-p", "-M", "-r", "-g", "-i", "-m", "--fullnat", "-w",
    "-x", "-y", "-n", "-c", "--timeout", "--daemon", "--stats", "--rate", "--thresholds",
    "--persistent-conn", "--nosort", "--sort", "--exact", "-X", "-o", "--pe", "sip", "-b",
    "sh-port", "flag-1,flag-2", "--mcast-interface", "lo", "--syncid", "--mcast-group",
    "239.1.1.1", "ff02::1", "--mcast-port", "--mcast-ttl", "--sync-maxlen", "--tun-info",
    "--tun-type", "gue", "gre", "ipip", "--tun-port", "--tun-nocsum", "--tun-csum", "--tun-remcsum",
    "10.0.0.1:80", "10.0.0.1", "[2001:db8::1]:80", "2001:db8::2", "10.0.0.2:8080", "1", "0", "-1",
    "65536", "2147483648", "360", "255.255.255.0", "64", "--", "-", "", "=", "-Ln", "-Lnc", "-tfoo",
    "--stats=1", "-t=10.0.0.1:80", "localhost:http", "x", "#", "ipvsadm",
]  # fmt: skip


def argv_words() -> st.SearchStrategy[list[str]]:
    return st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=12)), max_size=10)
