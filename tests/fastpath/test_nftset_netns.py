"""nftables set elements over netlink (pylvs.netlink.nftset) in a fresh network namespace: a map
element given new data in one transaction (an add of an existing key is refused; put adds or
replaces), elements discarded in chunks whether or not they are there, and the elements of a set
read back with their counters, as `nft` lists them."""

from __future__ import annotations

import json
import shutil
import textwrap

import pytest

from pylvs.lab.netns import Netns, is_root

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not is_root(), reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft"),
]

CODE = r"""
import json, socket, struct, subprocess
from pylvs.netlink.nftset import NFPROTO_NETDEV, NftSet, concat
def nft(text):
    subprocess.run(["nft", "-f", "-"], input=text.encode(), check=True)
nft("table netdev t {\n"
    " set seen { type ipv4_addr . inet_service . ipv4_addr . inet_service; flags dynamic,timeout;"
    " timeout 60s; counter; }\n"
    " map flows { type ipv4_addr : ether_addr; flags timeout; }\n}\n")
els = ", ".join(f"10.0.{i // 250}.{i % 250} . 80 . 172.25.254.10 . {1000 + i} counter packets {i} bytes {i * 60}"
                for i in range(600))
nft("add element netdev t seen { " + els + " }\n")
seen = NftSet(NFPROTO_NETDEV, "t", "seen")
got = {k: (pk, by) for k, _v, pk, by in seen.dump()}
want = {concat(socket.inet_aton(f"10.0.{i // 250}.{i % 250}"), struct.pack("!H", 80),
               socket.inet_aton("172.25.254.10"), struct.pack("!H", 1000 + i)): (i, i * 60) for i in range(600)}
flows = NftSet(NFPROTO_NETDEV, "t", "flows")
key = socket.inet_aton("192.168.1.220")
flows.add([(key, bytes.fromhex("020000000001"), 0)])
errors = []
try:
    flows.add([(key, bytes.fromhex("020000000002"), 0)])
except OSError as e:
    errors.append(e.errno)
flows.replace([(key, bytes.fromhex("020000000002"), 0)])
try:
    flows.replace([(socket.inet_aton("192.168.1.221"), bytes(6), 0)])
except OSError as e:
    errors.append(e.errno)
flows.put([(key, bytes.fromhex("020000000003"), 0), (socket.inet_aton("192.168.1.222"), bytes(6), 0)])
put = sorted((k.hex(), v.hex() if v else None) for k, v, _p, _b in flows.dump())
flows.delete([socket.inet_aton("192.168.1.222")])
flows.replace([(key, bytes.fromhex("020000000002"), 0)])
flows.add([(socket.inet_aton(f"10.1.0.{i}"), bytes(6), 0) for i in range(1, 200)])
flows.discard([socket.inet_aton(f"10.1.0.{i}") for i in range(0, 250)], chunk=64)  # most are not there
after = [(k.hex(), v.hex() if v else None) for k, v, _p, _b in flows.dump()]
old = NftSet(NFPROTO_NETDEV, "t", "flows")
old.destroy_ok = False  # as on a kernel without the destroy message (before 6.3)
old.put([(key, bytes.fromhex("020000000004"), 0), (socket.inet_aton("192.168.1.223"), bytes(6), 0)])
old_put = sorted((k.hex(), v.hex() if v else None) for k, v, _p, _b in old.dump())
old.discard([socket.inet_aton("192.168.1.223"), socket.inet_aton("192.168.1.224")])
old_left = [k.hex() for k, _v, _p, _b in old.dump()]
print(json.dumps({
    "same": got == want, "n": len(got),
    "flows": after,
    "errors": errors, "put": put, "old_put": old_put, "old_left": old_left,
}))
"""


def test_replace_and_dump_with_counters() -> None:
    with Netns() as n:
        n.add("d")
        r = json.loads(n.run("d", [n.python(), "-c", textwrap.dedent(CODE)]).stdout)
    assert r["same"] and r["n"] == 600  # more than one netlink message of the dump
    assert r["flows"] == [["c0a801dc", "020000000002"]]  # replaced, not added twice; the rest discarded
    assert r["errors"] == [17, 2]  # EEXIST for the add, ENOENT for a replace of nothing
    # put: one element given new data, one added, in one transaction
    assert r["put"] == [["c0a801dc", "020000000003"], ["c0a801de", "000000000000"]]
    # the same one message at a time, as on kernels before 6.3
    assert r["old_put"] == [["c0a801dc", "020000000004"], ["c0a801df", "000000000000"]]
    assert r["old_left"] == ["c0a801dc"]
