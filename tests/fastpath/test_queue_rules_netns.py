"""The fast path's NFQUEUE rules, written over netlink into the pylvs table (pylvs.netlink.nftrule),
in a fresh network namespace: what the kernel lists, the whole batch refused when any rule is
wrong (the old rules stay), and an older pylvsd's iptables chain removed on adoption."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from pylvs.engines.packet.fastpath import tables
from pylvs.lab.netns import Netns, is_root

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not is_root(), reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft"),
]

VIP = "172.25.254.100"


def _in_ns(n: Netns, code: str) -> str:
    """Run `code` with pylvs in the namespace "d"; its stdout."""
    return n.run("d", [n.python(), "-c", textwrap.dedent(code)]).stdout


def test_queue_rules_replace_the_chain_in_one_transaction() -> None:
    with Netns() as n:
        n.add("d")
        out = _in_ns(
            n,
            f"""
            from pylvs.engines.packet.fastpath import tables as t
            from pylvs.netlink import nftrule
            assert t.nft(t.ip_table_text())[0] == 0
            def show():
                print(t.nft("", ("list", "chain", "ip", t.IP_TABLE, t.QUEUE_CHAIN))[1])
            t.apply_queue_rules(t.queue_rules([(6, "{VIP}", 80), (17, "{VIP}", 0)], [66]), 7000, True)
            show()
            t.apply_queue_rules(t.queue_rules([(6, "{VIP}", 443)], []), 7001, False)
            show()
            bad = t.queue_rules([(6, "{VIP}", 80)], [])[0].exprs(7000, True)
            try:  # the second rule names a target the kernel does not have: nothing changes
                nftrule.replace_rules(2, t.IP_TABLE, t.QUEUE_CHAIN, [bad, [nftrule.xt_target("NOSUCH", 0, b"")]])
            except OSError as e:
                print("refused:", e.errno)
            show()
            t.apply_queue_rules([], 7000, True)
            show()
            """,
        )
    lists = out.split("table ip ")
    first, second, after_refusal, empty = lists[1:5]
    assert "priority mangle + 1" in first
    assert "meta mark 0x00000042 ct state new queue num 7000 bypass" in first
    assert f"ip daddr {VIP} tcp dport 80 ct state new queue num 7000 bypass" in first
    assert f"ip daddr {VIP} meta l4proto udp ct state new queue num 7000 bypass" in first
    assert "queue num 7001" in second and "dport 443" in second and "dport 80" not in second
    assert "bypass" not in second
    assert "refused: 2" in second
    assert after_refusal == second.split("refused:")[0]
    assert "queue" not in empty.split("policy accept;")[1]


@pytest.mark.skipif(shutil.which("iptables") is None, reason="needs iptables")
def test_an_older_pylvsds_iptables_chain_is_removed() -> None:
    with Netns() as n:
        n.add("d")
        for rule in (
            ["-N", tables.LEGACY_IPT_CHAIN],
            ["-A", tables.LEGACY_IPT_CHAIN, "-d", VIP, "-j", "NFQUEUE", "--queue-num", "7000"],
            ["-A", "PREROUTING", "-j", tables.LEGACY_IPT_CHAIN],
        ):
            n.run("d", ["iptables", "-w", "-t", "mangle", *rule])
        n.run("d", ["iptables", "-w", "-t", "mangle", "-A", "PREROUTING", "-j", "MARK", "--set-mark", "66"])
        _in_ns(n, "from pylvs.engines.packet.fastpath import tables; tables.remove_legacy_queue_chain()")
        left = n.run("d", ["iptables", "-w", "-t", "mangle", "-S"]).stdout
    assert tables.LEGACY_IPT_CHAIN not in left
    assert "-A PREROUTING -j MARK --set-xmark 0x42/0xffffffff" in left  # the user's rule stays
