"""The packet engine's firewall-mark queue rules live in an `ip` table of its own name (no rules in
iptables' chains), replaced whole on each change, and go with the table, also when a crashed
daemon's table is found by the next one (remove_stale)."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from pylvs.lab.netns import Netns, is_root

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not is_root(), reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft"),
]


def test_mark_rules_follow_the_services_and_leave_with_the_table() -> None:
    code = """
        import subprocess
        from pylvs.engines.packet.nft import NftTable, remove_stale
        def show(tag):
            out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
            rules = subprocess.run(["nft", "list", "chain", "ip", "pylvs_999999", "fwmark"],
                                   capture_output=True, text=True).stdout
            print(tag, sorted(out.split("\\n")), [ln.strip() for ln in rules.splitlines() if "queue" in ln])
        t = NftTable("pylvs_999999")
        t.apply_marks([66, 7], 1234)
        show("two")
        t.apply_marks([7], 1234)
        show("one")
        t.apply_marks([], 1234)
        show("none")
        t.apply_marks([66], 1234)
        print("stale", remove_stale())  # no process 999999: a crashed daemon's table
        show("after")
        """
    with Netns() as n:
        n.add("d")
        out = n.run("d", [n.python(), "-c", textwrap.dedent(code)]).stdout
    lines = dict(ln.split(" ", 1) for ln in out.strip().splitlines())
    assert "table ip pylvs_999999" in lines["two"]
    assert "'meta mark 0x00000007 queue num 1234', 'meta mark 0x00000042 queue num 1234'" in lines["two"]
    assert "0x00000042" not in lines["one"] and "meta mark 0x00000007 queue num 1234" in lines["one"]
    assert "pylvs_999999" not in lines["none"]
    assert lines["stale"] == "['pylvs_999999']"
    assert "pylvs_999999" not in lines["after"]
