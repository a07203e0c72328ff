"""pylvs.netlink.ebpf: the assembler's encodings and label resolution (no privileges needed), the
constants against the uapi header compiled with gcc (when both are there), and as root: a hash
map's element operations, a program the verifier refuses, and a tc ingress program in a fresh
namespace that counts IPv4 packets and drops UDP to port 9."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import struct
import subprocess
import tempfile
import textwrap
import threading
import time

import pytest

from pylvs.lab.netns import Netns, is_root
from pylvs.netlink import ebpf
from pylvs.netlink.ebpf import (
    BPF_B,
    BPF_DW,
    BPF_H,
    BPF_MAP_TYPE_ARRAY,
    BPF_MAP_TYPE_HASH,
    BPF_NOEXIST,
    BPF_W,
    HELPER_MAP_LOOKUP_ELEM,
    R0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R10,
    SKB_DATA,
    SKB_DATA_END,
    SKB_MARK,
    TC_ACT_OK,
    TC_ACT_SHOT,
    Asm,
    BpfError,
    BpfMap,
    TcIngress,
    load_program,
)

root_only = pytest.mark.skipif(not is_root(), reason="needs root for bpf() and network namespaces")


def one(build: str) -> str:
    """The hex of the instructions one Asm call sequence makes (`a` is the Asm)."""
    a = Asm()
    exec(build, {"a": a, **vars(ebpf)})
    return a.assemble().hex()


# --- assembler -------------------------------------------------------------------------------
# Expected bytes worked out by hand from struct bpf_insn: opcode, dst | src << 4, off (le16), imm (le32).
@pytest.mark.parametrize(
    ("build", "want"),
    [
        ("a.mov_imm(R0, 0)", "b700000000000000"),  # ALU64|MOV|K
        ("a.mov_imm(R1, -1)", "b7010000ffffffff"),
        ("a.mov_imm(R1, 0xFFFFFFFF)", "b7010000ffffffff"),  # an unsigned 32-bit spelling of -1
        ("a.mov32_reg(R3, R7)", "bc73000000000000"),  # ALU|MOV|X
        ("a.mov_reg(R6, R1)", "bf16000000000000"),
        ("a.alu_imm('add', R2, -4)", "0702 0000 fcffffff"),
        ("a.alu32_imm('and', R5, 0xF)", "5405 0000 0f000000"),
        ("a.alu_reg('lsh', R4, R5)", "6f54 0000 00000000"),
        ("a.alu_imm('neg', R1, 0)", "8701 0000 00000000"),
        ("a.be(R5, 16)", "dc05 0000 10000000"),  # ALU|END|TO_BE
        ("a.le(R5, 32)", "d405 0000 20000000"),
        ("a.ldx(BPF_W, R2, R1, 76)", "6112 4c00 00000000"),  # LDX|W|MEM, r2 = *(u32 *)(r1 + 76)
        ("a.ldx(BPF_H, R5, R2, 12)", "6925 0c00 00000000"),
        ("a.ldx(BPF_B, R5, R2, 23)", "7125 1700 00000000"),
        ("a.stx(BPF_DW, R10, R1, -8)", "7b1a f8ff 00000000"),
        ("a.st_imm(BPF_W, R10, -4, 7)", "620a fcff 07000000"),
        ("a.atomic_add(BPF_DW, R0, R1, 0)", "db10 0000 00000000"),  # STX|DW|ATOMIC, imm BPF_ADD
        ("a.ld_map_fd(R1, 5)", "1811 0000 05000000 0000 0000 00000000"),  # two slots, src PSEUDO_MAP_FD
        ("a.ld_imm64(R2, 0x1122334455667788)", "1802 0000 88776655 0000 0000 44332211"),
        ("a.call(1)", "8500 0000 01000000"),
        ("a.exit()", "9500 0000 00000000"),
        ("a.label('x'); a.jmp_imm('jne', R5, 8, 'x')", "5505 ffff 08000000"),  # a jump to itself: -1
        ("a.label('x'); a.jmp32_imm('jeq', R1, 2, 'x')", "1601 ffff 02000000"),
        ("a.label('x'); a.jmp_reg('jgt', R4, R3, 'x')", "2d34 ffff 00000000"),
    ],
)
def test_encoding(build: str, want: str) -> None:
    assert one(build) == want.replace(" ", "")


def test_labels_count_ld_imm64_as_two_slots() -> None:
    a = Asm()
    a.label("top")
    a.jmp_imm("jeq", R1, 0, "end")  # slot 0
    a.ld_imm64(R2, 1 << 40)  # slots 1-2
    a.ja("top")  # slot 3: back to 0 is -4
    a.label("end")
    a.exit()  # slot 4
    assert len(a) == 5
    code = a.assemble()
    offs = [struct.unpack_from("<h", code, 8 * i + 2)[0] for i in range(5)]
    assert offs[0] == 3 and offs[3] == -4


def test_assembler_errors() -> None:
    a = Asm()
    a.ja("nowhere")
    a.exit()
    with pytest.raises(ValueError, match="unknown label"):
        a.assemble()
    a = Asm()
    a.label("x")
    with pytest.raises(ValueError, match="twice"):
        a.label("x")
    a.ja("y")
    a.label("y")  # marks nothing: the program ends here
    with pytest.raises(ValueError, match="marks no instruction"):
        a.assemble()
    a = Asm()
    a.ja("far")
    for _ in range(40000):
        a.mov_imm(R0, 0)
    a.label("far")
    a.exit()
    with pytest.raises(ValueError, match="out of range"):
        a.assemble()
    with pytest.raises(ValueError):
        Asm().mov_imm(11, 0)
    with pytest.raises(ValueError):
        Asm().alu_imm("rol", R1, 1)
    with pytest.raises(ValueError):
        Asm().jmp_imm("jxx", R1, 1, "x")
    with pytest.raises(ValueError):
        Asm().mov_imm(R1, 1 << 32)
    with pytest.raises(ValueError):
        Asm().ldx(3, R1, R2, 0)
    with pytest.raises(ValueError):
        Asm().ldx(BPF_W, R1, R2, 1 << 15)
    with pytest.raises(ValueError):
        Asm().be(R1, 8)


# --- constants against the uapi header ---------------------------------------------------------
HEADER_CHECK = r"""
#include <stddef.h>
#include <stdio.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#define P(name, value) printf("%s %lld\n", name, (long long)(value));
int main(void) {
BODY
    return 0;
}
"""


def test_constants_match_uapi_header() -> None:
    gcc = shutil.which("gcc")
    if gcc is None or not os.path.exists("/usr/include/linux/bpf.h"):
        pytest.skip("needs gcc and the uapi headers")
    checks: dict[str, str] = {}
    for name in dir(ebpf):
        value = getattr(ebpf, name)
        if not isinstance(value, int) or name.startswith("_"):
            continue
        if name.startswith("HELPER_"):
            checks[name] = "BPF_FUNC_" + name.removeprefix("HELPER_").lower()
        elif name.startswith("SKB_"):
            checks[name] = f"offsetof(struct __sk_buff, {name.removeprefix('SKB_').lower()})"
        elif name.startswith(("BPF_", "TC_ACT_")) and name != "BPF_ATOMIC_ADD":
            checks[name] = name
    checks["BPF_ATOMIC_ADD"] = "BPF_ADD"
    body = "\n".join(f'    P("{k}", {v})' for k, v in sorted(checks.items()))
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "c.c")
        with open(src, "w") as f:
            f.write(HEADER_CHECK.replace("BODY", body, 1))
        exe = os.path.join(d, "c")
        subprocess.run([gcc, "-o", exe, src], check=True, capture_output=True, timeout=60)
        out = subprocess.run([exe], check=True, capture_output=True, text=True, timeout=10).stdout
    got = {k: int(v) for k, v in (line.split() for line in out.splitlines())}
    assert got == {k: getattr(ebpf, k) for k in checks}
    assert len(checks) > 60


# --- maps and loading ------------------------------------------------------------------------
@root_only
def test_hash_map_elements() -> None:
    with BpfMap(BPF_MAP_TYPE_HASH, 4, 8, 4096, name="plv_test") as m:
        want = {struct.pack("<I", i): struct.pack("<Q", i * 7) for i in range(2000)}
        for k, v in want.items():
            m.update(k, v)
        assert m.lookup(struct.pack("<I", 12)) == struct.pack("<Q", 84)
        assert m.lookup(struct.pack("<I", 5000)) is None
        with pytest.raises(BpfError) as e:
            m.update(struct.pack("<I", 12), bytes(8), BPF_NOEXIST)
        assert e.value.errno == 17
        assert dict(m.items()) == want and len(m.items()) == 2000  # batched
        assert sorted(m.keys()) == sorted(want)
        assert m.delete(struct.pack("<I", 12)) is True
        assert m.delete(struct.pack("<I", 12)) is False
        del want[struct.pack("<I", 12)]
        m._batch_ok = False  # the keys()+lookup walk, as on kernels before 5.6
        assert dict(m.items()) == want
        with pytest.raises(ValueError):
            m.lookup(b"\0")
    assert m.fd == -1


@root_only
def test_verifier_refusal_carries_the_log() -> None:
    a = Asm()
    a.mov_reg(R0, R2)  # r2 was never written: the verifier refuses the read
    a.exit()
    with pytest.raises(BpfError) as e:
        load_program(a.assemble(), name="plv_bad")
    assert e.value.errno in (13, 22)
    assert "R2" in e.value.log and "R2" in str(e.value)


# --- tc ingress end to end ---------------------------------------------------------------------
def counting_dropper(counters: int) -> bytes:
    """Counts IPv4 frames in counters[0] and the ones it drops (UDP to port 9) in counters[1]."""
    a = Asm()

    def count(index: int) -> None:
        a.st_imm(BPF_W, R10, -4, index)
        a.mov_reg(R2, R10)
        a.alu_imm("add", R2, -4)
        a.ld_map_fd(R1, counters)
        a.call(HELPER_MAP_LOOKUP_ELEM)
        a.jmp_imm("jeq", R0, 0, f"counted{index}")
        a.mov_imm(R1, 1)
        a.atomic_add(BPF_DW, R0, R1, 0)
        a.label(f"counted{index}")

    def packet(need: int) -> None:  # r2 = data, r3 = data_end, pass unless `need` bytes are there
        a.ldx(BPF_W, R2, R6, SKB_DATA)
        a.ldx(BPF_W, R3, R6, SKB_DATA_END)
        a.mov_reg(R4, R2)
        a.alu_imm("add", R4, need)
        a.jmp_reg("jgt", R4, R3, "pass")

    a.mov_reg(R6, R1)
    packet(14)
    a.ldx(BPF_H, R5, R2, 12)
    a.be(R5, 16)
    a.jmp_imm("jne", R5, 0x0800, "pass")
    count(0)
    packet(14 + 20 + 4)  # the helper call may have moved the packet: reload
    a.ldx(BPF_B, R5, R2, 14)
    a.jmp32_imm("jne", R5, 0x45, "pass")  # IPv4 without options only
    a.ldx(BPF_B, R5, R2, 14 + 9)
    a.jmp_imm("jne", R5, 17, "pass")
    a.ldx(BPF_H, R5, R2, 14 + 20 + 2)
    a.be(R5, 16)
    a.jmp_imm("jne", R5, 9, "pass")
    count(1)
    a.mov_imm(R0, TC_ACT_SHOT)
    a.exit()
    a.label("pass")
    a.mov_imm(R0, TC_ACT_OK)
    a.exit()
    return a.assemble()


def frame(dport: int, proto: int = 17, ethertype: int = 0x0800, ihl: int = 5) -> bytes:
    eth = bytes.fromhex("020000000002 020000000001") + struct.pack("!H", ethertype)
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + 8, 1, 0, 64, proto, 0, bytes(4), bytes(4))
    ip += bytes(4 * (ihl - 5))
    return eth + ip + struct.pack("!HHHH", 40000, dport, 8, 0)


@root_only
def test_program_run_without_a_device() -> None:
    with BpfMap(BPF_MAP_TYPE_ARRAY, 4, 8, 2) as counters:
        prog = load_program(counting_dropper(counters.fd), name="plv_drop9")
        try:
            cases = [
                (frame(9), TC_ACT_SHOT),
                (frame(9999), TC_ACT_OK),
                (frame(9, proto=6), TC_ACT_OK),  # TCP
                (frame(9, ethertype=0x0806), TC_ACT_OK),  # not IPv4: not counted
                (frame(9, ihl=6), TC_ACT_OK),  # with options: passed, counted
                (frame(9)[:36], TC_ACT_OK),  # a whole IPv4 header, not the ports: passed, counted
            ]
            for data, verdict in cases:
                run = ebpf.run_program(prog, data)
                assert run.retval == verdict and run.data == data
            assert ebpf.run_program(prog, frame(9), repeat=3).retval == TC_ACT_SHOT
        finally:
            os.close(prog)
        count = {struct.unpack("<I", k)[0]: struct.unpack("<Q", v)[0] for k, v in counters.items()}
        assert count == {0: 5 + 3, 1: 1 + 3}


@root_only
def test_program_run_with_context_and_packet_writes() -> None:
    a = Asm()
    a.ldx(BPF_W, R0, R1, SKB_MARK)
    a.alu_imm("add", R0, 1)  # verdict: the mark it came with, plus one
    a.st_imm(BPF_W, R1, SKB_MARK, 0x77)
    a.ldx(BPF_W, R2, R1, SKB_DATA)
    a.ldx(BPF_W, R3, R1, SKB_DATA_END)
    a.mov_reg(R4, R2)
    a.alu_imm("add", R4, 1)
    a.jmp_reg("jgt", R4, R3, "out")
    a.st_imm(BPF_B, R2, 0, 0xAA)
    a.label("out")
    a.exit()
    prog = load_program(a.assemble(), name="plv_mark")
    try:
        ctx = bytearray(192)  # sizeof(struct __sk_buff) since 5.16
        struct.pack_into("<I", ctx, SKB_MARK, 5)
        run = ebpf.run_program(prog, frame(9), ctx=bytes(ctx))
    finally:
        os.close(prog)
    assert run.retval == 6
    assert run.data == b"\xaa" + frame(9)[1:]
    assert run.ctx is not None and struct.unpack_from("<I", run.ctx, SKB_MARK)[0] == 0x77


LISTENER = r"""
import json, select, socket, time
socks = {}
for port in (9, 9999):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.77.0.2", port))
    socks[s] = port
print("ready", flush=True)
got = {9: 0, 9999: 0}
end = time.monotonic() + 8
while time.monotonic() < end and got[9999] < 5:
    ready, _, _ = select.select(list(socks), [], [], 0.2)
    for s in ready:
        s.recv(2048)
        got[socks[s]] += 1
settle = time.monotonic() + 0.3  # a port-9 datagram sent last would be here by now
while time.monotonic() < settle:
    ready, _, _ = select.select(list(socks), [], [], 0.05)
    for s in ready:
        s.recv(2048)
        got[socks[s]] += 1
print(json.dumps(got), flush=True)
"""

SENDER = r"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(5):
    s.sendto(b"drop me", ("10.77.0.2", 9))
    s.sendto(b"let me in", ("10.77.0.2", 9999))
    time.sleep(0.02)
"""


@root_only
def test_tc_ingress_counts_and_drops() -> None:
    with Netns() as n, BpfMap(BPF_MAP_TYPE_ARRAY, 4, 8, 2, name="plv_counts") as counters:
        n.add("c")
        n.add("d")
        n.veth("c", "plvc", "d", "plvd")
        n.addr("c", "plvc", "10.77.0.1/24")
        n.addr("d", "plvd", "10.77.0.2/24")
        link = json.loads(n.run("d", ["ip", "-j", "link", "show", "dev", "plvd"]).stdout)
        prog = load_program(counting_dropper(counters.fd), name="plv_drop9")
        try:
            hook = TcIngress(link[0]["ifindex"], prog, name="plv_drop9", netns=n.ns("d"))
        finally:
            os.close(prog)  # the filter holds its own reference
        try:
            shown = n.run("d", ["tc", "filter", "show", "dev", "plvd", "ingress"]).stdout
            assert "plv_drop9" in shown and "direct-action" in shown
            listener = n.spawn("d", [n.python(), "-c", textwrap.dedent(LISTENER)], log_name="listen")
            end = time.monotonic() + 10
            while "ready" not in n.log("listen") and time.monotonic() < end:
                assert listener.poll() is None, n.log("listen")
                time.sleep(0.05)
            n.run("c", [n.python(), "-c", textwrap.dedent(SENDER)], timeout=20)
            listener.wait(15)
            got = json.loads(n.log("listen").splitlines()[-1])
            values = dict(counters.items())
            a = Asm()
            a.mov_imm(R0, TC_ACT_OK)
            a.exit()
            passer = load_program(a.assemble(), name="plv_pass")
            try:
                hook.replace(passer, name="plv_pass")
            finally:
                os.close(passer)
            shown = n.run("d", ["tc", "filter", "show", "dev", "plvd", "ingress"]).stdout
            assert "plv_pass" in shown and "plv_drop9" not in shown
        finally:
            hook.close()
        assert got == {"9": 0, "9999": 5}
        ipv4, dropped = (struct.unpack("<Q", values[struct.pack("<I", i)])[0] for i in (0, 1))
        assert dropped == 5
        assert ipv4 == 10  # the namespaces carry no other IPv4 traffic (ARP is not IPv4)
        assert n.run("d", ["tc", "filter", "show", "dev", "plvd", "ingress"]).stdout.strip() == ""
        assert "clsact" not in n.run("d", ["tc", "qdisc", "show", "dev", "plvd"]).stdout
        hook.close()  # twice is harmless


@root_only
def test_tc_ingress_from_a_thread_inside_the_namespace() -> None:
    """The engine's way: a thread that entered the director's namespace with setns(2) attaches with
    netns=None. A missing device is a BpfError."""
    libc = ctypes.CDLL(None, use_errno=True)
    a = Asm()
    a.mov_imm(R0, TC_ACT_OK)
    a.exit()
    with Netns() as n:
        n.add("d")
        n.add("e")
        n.veth("d", "plvx", "e", "plvy")
        ifindex = json.loads(n.run("d", ["ip", "-j", "link", "show", "dev", "plvx"]).stdout)[0]["ifindex"]
        shown: list[str] = []
        errors: list[BaseException] = []

        def attach() -> None:
            try:
                fd = os.open(f"/run/netns/{n.ns('d')}", os.O_RDONLY)
                try:
                    assert libc.setns(fd, 0x40000000) == 0  # CLONE_NEWNET, for this thread only
                finally:
                    os.close(fd)
                prog = load_program(a.assemble(), name="plv_pass")
                try:
                    with pytest.raises(BpfError):
                        TcIngress(ifindex + 1000, prog)
                    with TcIngress(ifindex, prog, name="plv_pass"):
                        shown.append(n.run("d", ["tc", "filter", "show", "dev", "plvx", "ingress"]).stdout)
                finally:
                    os.close(prog)
            except BaseException as e:  # handed to the test's thread
                errors.append(e)

        worker = threading.Thread(target=attach)
        worker.start()
        worker.join(30)
        assert not errors, errors
        assert "plv_pass" in shown[0] and "direct-action" in shown[0]
        assert n.run("d", ["tc", "filter", "show", "dev", "plvx", "ingress"]).stdout.strip() == ""
        assert "clsact" not in n.run("d", ["tc", "qdisc", "show", "dev", "plvx"]).stdout
