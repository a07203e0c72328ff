"""The packet engine's memory-mapped rings on real AF_PACKET sockets: frames written into a TX ring
on one end of a veth pair come out of a TPACKET_V3 or V2 RX ring on the other, whole, in order, with
the virtio-net header in front (V2: also a frame too big for a slot, read whole through the socket in
its place); and every forwarding mode still works end to end with the rings on."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from typing import Any

import pytest

from pylvs.lab.netns import is_root

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not is_root(), reason="needs root for network namespaces"),
]

PROBE = r"""
import json, select, socket, struct, sys, time
from pylvs.engines.packet.ring import RxRing, TxRing, VNET_LEN
ETH_P_ALL = 3
rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
rx.setsockopt(263, 15, 1)
ring = RxRing(rx, block_size=1 << 17, blocks=4, timeout_ms=2)
rx.bind(("plvb", ETH_P_ALL))
tx = TxRing("plva", frames=16)
hdr = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5"
sent = [hdr + bytes([i]) * (60 + i * 50) for i in range(24)]   # more than the ring's 16 slots
puts = []
for f in sent:
    ok = tx.put(bytes(VNET_LEN) + f)
    if not ok:
        tx.flush()
        time.sleep(0.05)  # veth frees the slots once the frames are delivered
        ok = tx.put(bytes(VNET_LEN) + f)
    puts.append(ok)
tx.flush()
big = tx.put(bytes(VNET_LEN) + hdr + bytes(3000))   # larger than a 2 KB slot: the caller's job
got, blocks = [], 0
end = time.monotonic() + 3
while time.monotonic() < end and len(got) < len(sent):
    select.select([rx], [], [], 0.2)
    for frames in ring.take():
        blocks += 1
        for f in frames:
            if f[VNET_LEN + 12 : VNET_LEN + 14] == b"\x88\xb5":
                got.append(bytes(f))
print(json.dumps({
    "puts": puts, "big": big, "blocks": blocks, "flushes": tx.flushes,
    "same": [g[VNET_LEN:] == s for g, s in zip(got, sent)], "n": len(got),
    "vnet": all(g[:VNET_LEN] == bytes(VNET_LEN) for g in got),
}))
ring.close(); tx.close(); rx.close()
"""


PROBE_V2 = r"""
import json, select, socket, time
from pylvs.engines.packet.ring import RxRingV2, TxRing, VNET_LEN
rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
rx.setsockopt(263, 15, 1)
ring = RxRingV2(rx, frames=64)   # fewer slots than frames sent: slots go back as they are read
rx.bind(("plvb", 3))
tx = TxRing("plva", frames=16)
plain = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
plain.setsockopt(263, 15, 1)
plain.bind(("plva", 0))
hdr = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5"
sent = [hdr + bytes([i % 256]) * (60 + (i * 50) % 1400) for i in range(100)]
sent.insert(10, hdr + b"\x77" * 5000)   # larger than a 2 KB slot: the kernel queues it whole as well
got, looks = [], 0
def drain():
    global looks
    for frames in ring.take(limit=32):
        looks += 1
        got.extend(bytes(f) for f in frames if f[VNET_LEN + 12 : VNET_LEN + 14] == b"\x88\xb5")
for f in sent:
    if len(f) > 2000:
        tx.flush()
        time.sleep(0.02)
        plain.send(bytes(VNET_LEN) + f)
    elif not tx.put(bytes(VNET_LEN) + f):
        tx.flush()
        time.sleep(0.05)
        drain()
        assert tx.put(bytes(VNET_LEN) + f)
tx.flush()
end = time.monotonic() + 3
while time.monotonic() < end and len(got) < len(sent):
    select.select([rx], [], [], 0.2)
    drain()
print(json.dumps({
    "n": len(got), "same": [g[VNET_LEN:] == s for g, s in zip(got, sent)], "truncated": ring.truncated,
    "looks": looks, "vnet": all(g[:VNET_LEN] == bytes(VNET_LEN) for g in got),
}))
ring.close(); tx.close(); rx.close(); plain.close()
"""


@pytest.fixture
def veth_ns() -> object:
    ns = "plv" + secrets.token_hex(4)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (
            "ip link add plva mtu 9000 type veth peer name plvb mtu 9000",
            "ip link set plva up",
            "ip link set plvb up",
            "ip link set lo up",
        ):
            subprocess.run(["ip", "-n", ns, *cmd.split()[1:]], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def _probe(ns: str, code: str) -> dict[str, object]:
    import pylvs

    src = os.path.dirname(os.path.dirname(os.path.abspath(pylvs.__file__)))
    env = dict(os.environ, PYTHONPATH=src)
    p = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    r: dict[str, object] = json.loads(p.stdout)
    return r


def test_tx_ring_to_v3_rx_ring_over_veth(veth_ns: str) -> None:
    r: dict[str, Any] = _probe(veth_ns, PROBE)
    assert all(r["puts"]), r
    assert r["big"] is False
    assert r["n"] == 24 and all(r["same"]), r  # whole, in order
    assert r["vnet"]
    assert 1 <= r["blocks"] <= 24 and r["flushes"] >= 2


def test_tx_ring_to_v2_rx_ring_over_veth(veth_ns: str) -> None:
    r: dict[str, Any] = _probe(veth_ns, PROBE_V2)
    assert r["n"] == 101 and all(r["same"]), r  # whole, in order, the big one in its place
    assert r["truncated"] == 0 and r["vnet"]
    assert r["looks"] >= 2  # the ring wrapped: 101 frames through 64 slots


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nft") is None or shutil.which("curl") is None, reason="needs nft and curl")
@pytest.mark.parametrize(
    "mode, ring",
    [("nat", "v3"), ("dr", "v3"), ("tun", "v3"), ("fullnat", "v3"), ("nat", "v2"), ("fullnat", "v2")],
)
def test_labs_with_rings(mode: str, ring: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pylvs.lab.runner import Lab

    monkeypatch.setenv("PYLVS_LAB_ENGINE_OPTS", json.dumps({"ring": ring, "tx_ring": True}))
    with Lab(mode, "packet", out=lambda _s: None, use_daemon=False, udp=mode == "nat") as run:
        r = run.run()
    assert sorted(set(r.answers)) == ["welcome to 192.168.1.10", "welcome to 192.168.1.20"], r.answers
    assert r.upload_ok and r.download_ok
    assert r.engine_stats.get("ring_blocks", 0) > 0 and r.engine_stats.get("tx_flushes", 0) > 0
    if mode in ("dr", "tun"):
        assert r.replies_via_director == 0
    else:
        assert r.replies_via_director > 0
    if mode == "nat":
        assert len(r.udp_answers) == 4
