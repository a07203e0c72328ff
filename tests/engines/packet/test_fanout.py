"""PACKET_FANOUT across worker processes: the fanout program keeps both directions of a connection
on one worker (NAT replies by the client endpoint, FULLNAT replies by the worker's port slice), so
the seed's labs work with two workers, and both workers carry traffic."""

from __future__ import annotations

import json
import shutil

import pytest

from pylvs import cbpf
from pylvs.engines.packet import fanout
from pylvs.lab.netns import is_root


def run_cbpf(prog: list[tuple[int, int, int, int]], pkt: bytes) -> int:
    """A tiny interpreter for the instructions fanout.program uses (the kernel runs the real thing)."""
    a = x = 0
    mem = [0] * 16

    def at(k: int) -> int:  # the kernel's view: SKF_NET_OFF from the IP header, protocol ancillary
        return 14 + k - fanout.NET if k >= fanout.NET else k

    pc = 0
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        if code == cbpf.LD_H_ABS and k == fanout.PROTOCOL:
            a = int.from_bytes(pkt[12:14], "big")
        elif code == cbpf.LD_H_ABS:
            a = int.from_bytes(pkt[at(k) : at(k) + 2], "big")
        elif code == cbpf.LD_W_ABS:
            a = int.from_bytes(pkt[at(k) : at(k) + 4], "big")
        elif code == cbpf.LD_B_ABS:
            a = pkt[at(k)]
        elif code == cbpf.LD_H_IND:
            a = int.from_bytes(pkt[x + at(k) : x + at(k) + 2], "big")
        elif code == cbpf.LDX_B_MSH:
            x = (pkt[at(k)] & 0xF) * 4
        elif code == cbpf.LD_IMM:
            a = k
        elif code == cbpf.ST:
            mem[k] = a
        elif code == cbpf.LDX_MEM:
            x = mem[k]
        elif code == cbpf.ALU_XOR_X:
            a ^= x
        elif code == cbpf.ALU_MUL_K:
            a = (a * k) & 0xFFFFFFFF
        elif code == cbpf.ALU_RSH_K:
            a >>= k
        elif code == cbpf.ALU_MOD_K:
            a %= k
        elif code == cbpf.ALU_SUB_K:
            a = (a - k) & 0xFFFFFFFF
        elif code == cbpf.ALU_DIV_K:
            a //= k
        elif code == cbpf.JEQ_K:
            pc += jt if a == k else jf
        elif code == cbpf.JGE_K:
            pc += jt if a >= k else jf
        elif code == cbpf.RET_K:
            return k
        elif code == cbpf.RET_A:
            return a
        else:
            raise AssertionError(f"opcode {code:#x}")


def frame(src: str, sport: int, dst: str, dport: int, proto: int = 6) -> bytes:
    import socket
    import struct

    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, proto, 0, socket.inet_aton(src), socket.inet_aton(dst)
    )
    return bytes(12) + b"\x08\x00" + ip + struct.pack("!HH", sport, dport) + bytes(16)


def test_both_directions_meet_on_one_worker() -> None:
    import socket

    vip, lip = socket.inet_aton("172.25.254.100"), socket.inet_aton("192.168.1.100")
    for count in (2, 3, 4):
        prog = fanout.program([vip], [lip], count, (10000, 30000))
        seen = set()
        for cport in range(40000, 40100, 2):  # connect() picks even ports
            req = run_cbpf(prog, frame("172.25.254.10", cport, "172.25.254.100", 80))
            nat_reply = run_cbpf(prog, frame("192.168.1.10", 80, "172.25.254.10", cport))
            assert req == nat_reply < count
            seen.add(req)
        assert seen == set(range(count))  # every worker gets a share
        for k in range(count):
            lo, hi = fanout.port_slice(10000, 30000, k, count)
            for lport in (lo, hi, (lo + hi) // 2):
                assert run_cbpf(prog, frame("192.168.1.10", 80, "192.168.1.100", lport)) == k
    # ARP and ICMP: worker 0
    assert run_cbpf(prog, bytes(12) + b"\x08\x06" + bytes(40)) == 0
    assert run_cbpf(prog, frame("172.25.254.10", 0, "172.25.254.100", 0, proto=1)) == 0


def test_persistent_services_pick_the_worker_by_client_address() -> None:
    import socket

    vip = socket.inet_aton("172.25.254.100")
    prog = fanout.program([vip], [], 4, (10000, 30000), by_port=False)
    for client in ("172.25.254.10", "172.25.254.11", "10.1.2.3"):
        workers = {
            run_cbpf(prog, frame(client, cport, "172.25.254.100", 80)) for cport in range(40000, 40200, 2)
        }
        replies = {
            run_cbpf(prog, frame("192.168.1.10", 80, client, cport)) for cport in range(40000, 40200, 2)
        }
        assert len(workers) == 1 and workers == replies


def test_port_slices_do_not_overlap() -> None:
    slices = [fanout.port_slice(10000, 30000, k, 3) for k in range(3)]
    assert slices[0][0] == 10000
    assert slices[0][1] < slices[1][0] and slices[1][1] < slices[2][0] and slices[2][1] <= 30000
    with pytest.raises(ValueError):
        fanout.port_slice(10, 10, 1, 2)


@pytest.mark.netns
@pytest.mark.slow
@pytest.mark.skipif(not is_root(), reason="needs root for network namespaces")
@pytest.mark.skipif(shutil.which("nft") is None or shutil.which("curl") is None, reason="needs nft and curl")
@pytest.mark.parametrize("mode", ["nat", "dr", "tun", "fullnat"])
def test_labs_with_two_workers(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pylvs.lab.runner import Lab

    monkeypatch.setenv("PYLVS_LAB_ENGINE_OPTS", json.dumps({"workers": 2}))
    with Lab(mode, "packet", out=lambda _s: None, use_daemon=False, udp=False) as run:
        r = run.run()
        per_worker = []
        for k in range(2):
            with open(f"{run.stats_path}.{k}") as fh:
                per_worker.append(json.load(fh)["engine"])
    assert sorted(set(r.answers)) == ["welcome to 192.168.1.10", "welcome to 192.168.1.20"], r.answers
    assert r.upload_ok and r.download_ok
    assert r.engine_stats.get("workers") == 2
    assert all(w.get("in", 0) > 0 for w in per_worker), per_worker
    if mode in ("dr", "tun"):
        assert r.replies_via_director == 0
    else:
        assert r.replies_via_director > 0
