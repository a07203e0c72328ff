"""pylvs.netlink.ebpf additions: the atomics with fetch (encodings, and run in the kernel on an
array map's value), the ring buffer (RingBuf: records in order, wrap-around, discards, a full
ring, wake-ups as epoll/asyncio see them) and the batched map update/delete. The drain's
handling of a record still being written runs on a fake ring (no privileges needed)."""

from __future__ import annotations

import asyncio
import errno
import mmap
import os
import select
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from pylvs.lab.netns import is_root
from pylvs.netlink import ebpf
from pylvs.netlink.ebpf import (
    BPF_ANY,
    BPF_DW,
    BPF_MAP_TYPE_ARRAY,
    BPF_MAP_TYPE_HASH,
    BPF_MAP_TYPE_RINGBUF,
    BPF_NOEXIST,
    BPF_RB_FORCE_WAKEUP,
    BPF_RB_NO_WAKEUP,
    BPF_RINGBUF_BUSY_BIT,
    BPF_RINGBUF_DISCARD_BIT,
    BPF_W,
    HELPER_MAP_LOOKUP_ELEM,
    HELPER_RINGBUF_DISCARD,
    HELPER_RINGBUF_OUTPUT,
    HELPER_RINGBUF_RESERVE,
    HELPER_RINGBUF_SUBMIT,
    HELPER_SKB_LOAD_BYTES,
    R0,
    R1,
    R2,
    R3,
    R4,
    R6,
    R7,
    R8,
    R10,
    Asm,
    BpfError,
    BpfMap,
    RingBuf,
    load_program,
    run_program,
)

root_only = pytest.mark.skipif(not is_root(), reason="needs root for bpf()")

ETH = bytes.fromhex("020000000002 020000000001 88b5")  # a local experimental ethertype: no IP checks


def one(build: str) -> str:
    a = Asm()
    exec(build, {"a": a, **vars(ebpf)})
    return a.assemble().hex()


# --- the new constants against the uapi header ----------------------------------------------------
# (test_ebpf's header test checks every BPF_/HELPER_ name; this names the additions explicitly, so
# that one dropped from the module fails here rather than silently leaving that test's list)
NEW_CONSTANTS = {
    "BPF_MAP_TYPE_RINGBUF": "BPF_MAP_TYPE_RINGBUF",
    "HELPER_L3_CSUM_REPLACE": "BPF_FUNC_l3_csum_replace",
    "HELPER_L4_CSUM_REPLACE": "BPF_FUNC_l4_csum_replace",
    "HELPER_RINGBUF_OUTPUT": "BPF_FUNC_ringbuf_output",
    "HELPER_RINGBUF_RESERVE": "BPF_FUNC_ringbuf_reserve",
    "HELPER_RINGBUF_SUBMIT": "BPF_FUNC_ringbuf_submit",
    "HELPER_RINGBUF_DISCARD": "BPF_FUNC_ringbuf_discard",
    "BPF_RB_NO_WAKEUP": "BPF_RB_NO_WAKEUP",
    "BPF_RB_FORCE_WAKEUP": "BPF_RB_FORCE_WAKEUP",
    "BPF_RINGBUF_BUSY_BIT": "BPF_RINGBUF_BUSY_BIT",
    "BPF_RINGBUF_DISCARD_BIT": "BPF_RINGBUF_DISCARD_BIT",
    "BPF_RINGBUF_HDR_SZ": "BPF_RINGBUF_HDR_SZ",
    "BPF_F_MARK_MANGLED_0": "BPF_F_MARK_MANGLED_0",
    "BPF_F_HDR_FIELD_MASK": "BPF_F_HDR_FIELD_MASK",
    "BPF_FETCH": "BPF_FETCH",
    "BPF_XCHG": "BPF_XCHG",
    "BPF_CMPXCHG": "BPF_CMPXCHG",
    "ALU_OPS['or']": "BPF_OR",
    "ALU_OPS['add']": "BPF_ADD",
    "ebpf._MAP_UPDATE_BATCH": "BPF_MAP_UPDATE_BATCH",
    "ebpf._MAP_DELETE_BATCH": "BPF_MAP_DELETE_BATCH",
}


def test_new_constants_match_uapi_header() -> None:
    gcc = shutil.which("gcc")
    if gcc is None or not os.path.exists("/usr/include/linux/bpf.h"):
        pytest.skip("needs gcc and the uapi headers")
    body = "\n".join(f'    printf("%lld\\n", (long long)({c}));' for c in NEW_CONSTANTS.values())
    source = f"#include <stdio.h>\n#include <linux/bpf.h>\nint main(void) {{\n{body}\n    return 0;\n}}\n"
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "c.c"), "w") as f:
            f.write(source)
        exe = os.path.join(d, "c")
        subprocess.run([gcc, "-o", exe, os.path.join(d, "c.c")], check=True, capture_output=True, timeout=60)
        out = subprocess.run([exe], check=True, capture_output=True, text=True, timeout=10).stdout
    ours = [eval(name, {"ebpf": ebpf, **vars(ebpf)}) for name in NEW_CONSTANTS]
    assert dict(zip(NEW_CONSTANTS, map(int, out.split()), strict=True)) == dict(
        zip(NEW_CONSTANTS, ours, strict=True)
    )


# --- atomics: encodings ------------------------------------------------------------------------
# struct bpf_insn: opcode STX|size|ATOMIC (0xc3 W, 0xdb DW), dst | src << 4, off, imm = the operation
@pytest.mark.parametrize(
    ("build", "want"),
    [
        ("a.atomic_or(BPF_W, R1, R2, 4)", "c321 0400 40000000"),  # BPF_OR
        ("a.atomic_fetch_or(BPF_DW, R1, R2, 0)", "db21 0000 41000000"),  # BPF_OR | BPF_FETCH
        ("a.atomic_fetch_add(BPF_W, R0, R3, -8)", "c330 f8ff 01000000"),  # BPF_ADD | BPF_FETCH
        ("a.atomic_xchg(BPF_DW, R1, R2, 0)", "db21 0000 e1000000"),
        ("a.atomic_cmpxchg(BPF_DW, R1, R2, 0)", "db21 0000 f1000000"),
    ],
)
def test_atomic_encoding(build: str, want: str) -> None:
    assert one(build) == want.replace(" ", "")


@pytest.mark.parametrize("method", ["atomic_or", "atomic_fetch_or", "atomic_fetch_add", "atomic_cmpxchg"])
def test_atomics_take_words_only(method: str) -> None:
    with pytest.raises(ValueError, match="BPF_W or BPF_DW"):
        getattr(Asm(), method)(ebpf.BPF_H, R1, R2, 0)


# --- atomics: in the kernel ----------------------------------------------------------------------
def load_payload(a: Asm, length: int) -> None:
    """r6 = ctx; the `length` bytes after the Ethernet header onto the stack at r10 - length
    (the program returns 0xdead if the frame is shorter)."""
    a.mov_reg(R6, R1)
    a.mov_reg(R1, R6)
    a.mov_imm(R2, len(ETH))
    a.mov_reg(R3, R10)
    a.alu_imm("add", R3, -length)
    a.mov_imm(R4, length)
    a.call(HELPER_SKB_LOAD_BYTES)
    a.jmp_imm("jne", R0, 0, "short")


def atomic_program(cells: int, method: str, size: int) -> bytes:
    """Applies `method` to cells[0] with the operand from the frame (u64 after the Ethernet
    header; the next u64 is cmpxchg's expected value) and returns the old value the instruction
    fetched (for atomic_or, which fetches nothing: the operand register as it is after)."""
    a = Asm()
    load_payload(a, 16)
    a.st_imm(BPF_W, R10, -20, 0)
    a.ld_map_fd(R1, cells)
    a.mov_reg(R2, R10)
    a.alu_imm("add", R2, -20)
    a.call(HELPER_MAP_LOOKUP_ELEM)
    a.jmp_imm("jeq", R0, 0, "short")
    a.mov_reg(R1, R0)
    a.ldx(BPF_DW, R2, R10, -16)  # operand
    a.ldx(BPF_DW, R0, R10, -8)  # expected (cmpxchg's r0)
    getattr(a, method)(size, R1, R2, 0)
    if method != "atomic_cmpxchg":
        a.mov_reg(R0, R2)
    a.exit()
    a.label("short")
    a.mov_imm(R0, 0xDEAD)
    a.exit()
    return a.assemble()


@root_only
@pytest.mark.parametrize(
    ("method", "size", "start", "operand", "expected", "after", "returned"),
    [
        ("atomic_fetch_or", BPF_DW, 0x1_0000_0001, 0x6, 0, 0x1_0000_0007, 0x1),  # retval: low 32 bits
        ("atomic_fetch_or", BPF_W, 0x5_0000_0010, 0x3, 0, 0x5_0000_0013, 0x10),  # the high word untouched
        ("atomic_or", BPF_DW, 0x10, 0x2_0000_0001, 0, 0x2_0000_0011, 0x1),  # src keeps the operand
        ("atomic_or", BPF_W, 0x10, 0x1, 0, 0x11, 0x1),
        ("atomic_fetch_add", BPF_DW, 0xFFFF_FFFF, 2, 0, 0x1_0000_0001, 0xFFFF_FFFF),
        ("atomic_fetch_add", BPF_W, 0x7_FFFF_FFFF, 2, 0, 0x7_0000_0001, 0xFFFF_FFFF),  # 32-bit wrap
        ("atomic_cmpxchg", BPF_DW, 0x1_0000_0005, 9, 0x1_0000_0005, 9, 5),  # matched: swapped
        ("atomic_cmpxchg", BPF_DW, 0x1_0000_0005, 9, 0x5, 0x1_0000_0005, 5),  # all 64 bits compared
        ("atomic_cmpxchg", BPF_W, 0x3_0000_0005, 9, 0x5, 0x3_0000_0009, 5),  # only the low word
        ("atomic_cmpxchg", BPF_W, 0x5, 9, 0x6, 0x5, 5),
    ],
)
def test_atomics_in_a_program(
    method: str, size: int, start: int, operand: int, expected: int, after: int, returned: int
) -> None:
    with BpfMap(BPF_MAP_TYPE_ARRAY, 4, 8, 1, name="plv_atomic") as cells:
        key = struct.pack("<I", 0)
        cells.update(key, struct.pack("<Q", start))
        prog = load_program(atomic_program(cells.fd, method, size), name="plv_atomic")
        try:
            run = run_program(prog, ETH + struct.pack("<QQ", operand, expected))
        finally:
            os.close(prog)
        assert (run.retval, struct.unpack("<Q", cells.lookup(key) or b"")[0]) == (returned, after)


# --- ring buffer ---------------------------------------------------------------------------------
MODE_OUTPUT, MODE_RESERVE, MODE_DISCARD, MODE_OUTPUT12 = range(4)


def ring_program(ring: int) -> bytes:
    """Writes a record to the ring from the frame's payload: u64 value, u32 extra, u32 control
    (the mode in the low byte, the helper's flags above it).

    MODE_OUTPUT: bpf_ringbuf_output of the value (8 bytes); MODE_OUTPUT12: of value + extra (12
    bytes: records of 24 bytes with header and padding, so some straddle the ring's end);
    MODE_RESERVE / MODE_DISCARD: reserve 8 bytes, write the value, submit / discard. Returns the
    output helper's result (0 or -errno), 0 after a submit or discard, 1 if the reserve failed."""
    a = Asm()
    load_payload(a, 16)
    a.ldx(BPF_W, R7, R10, -4)
    a.mov_reg(R8, R7)
    a.alu_imm("rsh", R7, 8)  # flags
    a.alu_imm("and", R8, 0xFF)  # mode
    a.jmp_imm("jeq", R8, MODE_RESERVE, "reserve")
    a.jmp_imm("jeq", R8, MODE_DISCARD, "reserve")
    a.ld_map_fd(R1, ring)
    a.mov_reg(R2, R10)
    a.alu_imm("add", R2, -16)
    a.mov_imm(R3, 8)
    a.jmp_imm("jne", R8, MODE_OUTPUT12, "out")
    a.mov_imm(R3, 12)
    a.label("out")
    a.mov_reg(R4, R7)
    a.call(HELPER_RINGBUF_OUTPUT)
    a.exit()
    a.label("reserve")
    a.ld_map_fd(R1, ring)
    a.mov_imm(R2, 8)
    a.mov_imm(R3, 0)
    a.call(HELPER_RINGBUF_RESERVE)
    a.jmp_imm("jne", R0, 0, "reserved")
    a.mov_imm(R0, 1)
    a.exit()
    a.label("reserved")
    a.ldx(BPF_DW, R1, R10, -16)
    a.stx(BPF_DW, R0, R1, 0)
    a.mov_reg(R1, R0)
    a.mov_reg(R2, R7)
    a.jmp_imm("jeq", R8, MODE_DISCARD, "discard")
    a.call(HELPER_RINGBUF_SUBMIT)
    a.mov_imm(R0, 0)
    a.exit()
    a.label("discard")
    a.call(HELPER_RINGBUF_DISCARD)
    a.mov_imm(R0, 0)
    a.exit()
    a.label("short")
    a.mov_imm(R0, 0xDEAD)
    a.exit()
    return a.assemble()


class Ring:
    """A RingBuf of one page with the program that writes to it."""

    def __init__(self, rb: RingBuf, prog: int) -> None:
        self.rb = rb
        self.prog = prog

    def put(self, value: int, flags: int = 0, mode: int = MODE_OUTPUT, extra: int = 0) -> int:
        return run_program(self.prog, ETH + struct.pack("<QII", value, extra, mode | flags << 8)).retval


@pytest.fixture
def ring() -> Iterator[Ring]:
    if not is_root():
        pytest.skip("needs root for bpf()")
    with RingBuf(mmap.PAGESIZE, name="plv_ring") as rb:
        prog = load_program(ring_program(rb.fd), name="plv_ring")
        try:
            yield Ring(rb, prog)
        finally:
            os.close(prog)


def u64s(records: list[bytes]) -> list[int]:
    assert all(len(r) == 8 for r in records), records
    return [struct.unpack("<Q", r)[0] for r in records]


def test_records_in_order(ring: Ring) -> None:
    rb = ring.rb
    assert rb.drain() == [] and rb.pending() == 0
    for value in (7, 1 << 40, 3):
        assert ring.put(value) == 0
    assert rb.pending() == 3 * 16  # 8-byte header + 8 bytes each
    assert u64s(rb.drain()) == [7, 1 << 40, 3]
    assert rb.pending() == 0 and rb.drain() == []
    for value in range(5):
        ring.put(value)
    assert u64s(rb.drain(limit=2)) == [0, 1]
    assert rb.pending() == 3 * 16
    assert rb.drain(limit=0) == []
    assert u64s(rb.drain()) == [2, 3, 4]
    assert rb.pending() == 0


def test_reserve_submit_and_discard(ring: Ring) -> None:
    assert ring.put(1, mode=MODE_RESERVE) == 0
    assert ring.put(2, mode=MODE_DISCARD) == 0
    assert ring.put(3, mode=MODE_RESERVE) == 0
    assert ring.put(4, mode=MODE_DISCARD) == 0  # a discarded record last
    assert ring.rb.pending() == 4 * 16
    assert u64s(ring.rb.drain()) == [1, 3]
    assert ring.rb.pending() == 0  # the discarded ones were passed too


def test_wrap_around(ring: Ring) -> None:
    """3000 records through a one-page ring, drained every 97: the positions wrap many times; the
    12-byte records (24 with header and padding) straddle the ring's end now and then, which the
    double mapping of the data shows as one slice."""
    got: list[bytes] = []
    want: list[bytes] = []
    for i in range(3000):
        if i % 3 == 2:
            assert ring.put(i, extra=0xA000 + i, mode=MODE_OUTPUT12) == 0
            want.append(struct.pack("<QI", i, 0xA000 + i))
        else:
            assert ring.put(i) == 0
            want.append(struct.pack("<Q", i))
        if i % 97 == 96:
            got += ring.rb.drain()
    got += ring.rb.drain()
    assert got == want
    assert ring.rb.pending() == 0
    assert ring.rb.size == mmap.PAGESIZE


def test_full_ring_refuses_until_drained(ring: Ring) -> None:
    written = 0
    for i in range(ring.rb.size // 16 + 2):
        ret = ring.put(i)
        if ret != 0:
            assert ret == -errno.EAGAIN & 0xFFFFFFFF
            break
        written += 1
    # the kernel keeps reserved bytes below the ring's size: one record short of a full page
    assert written == ring.rb.size // 16 - 1
    assert ring.put(0, mode=MODE_RESERVE) == 1  # a reserve fails the same way
    assert u64s(ring.rb.drain()) == list(range(written))
    assert ring.put(99) == 0
    assert u64s(ring.rb.drain()) == [99]


def test_no_wakeup_records_are_still_drained(ring: Ring) -> None:
    for value in range(10):
        assert ring.put(value, flags=BPF_RB_NO_WAKEUP) == 0
    assert u64s(ring.rb.drain()) == list(range(10))


def test_wakeups_as_epoll_sees_them(ring: Ring) -> None:
    """Level-triggered epoll (asyncio's selector): an output into an empty ring wakes it; one
    with BPF_RB_NO_WAKEUP does not (though a fresh poll/select finds the data); while records
    wait unconsumed, a plain output does not wake either (the kernel's adaptive wake-up: only
    when the consumer had caught up), BPF_RB_FORCE_WAKEUP does."""
    rb = ring.rb
    ep = select.epoll()
    try:
        ep.register(rb.fd, select.EPOLLIN)
        assert ep.poll(0) == []
        ring.put(1)
        assert ep.poll(2) == [(rb.fd, select.EPOLLIN)]
        assert select.select([rb.fd], [], [], 0)[0] == [rb.fd]
        assert u64s(rb.drain()) == [1]
        assert ep.poll(0) == [] and select.select([rb.fd], [], [], 0)[0] == []

        ring.put(2, flags=BPF_RB_NO_WAKEUP)
        assert ep.poll(0.2) == []  # not woken
        assert select.select([rb.fd], [], [], 0)[0] == [rb.fd]  # yet readable when asked
        ring.put(3)  # the consumer is behind: no wake-up
        assert ep.poll(0.2) == []
        ring.put(4, flags=BPF_RB_FORCE_WAKEUP)
        assert ep.poll(2) == [(rb.fd, select.EPOLLIN)]
        assert u64s(rb.drain()) == [2, 3, 4]
        assert ep.poll(0) == []
    finally:
        ep.close()


def test_asyncio_reader_wakes(ring: Ring) -> None:
    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[list[bytes]] = loop.create_future()

        def readable() -> None:
            records = ring.rb.drain()
            if records and not got.done():
                got.set_result(records)

        loop.add_reader(ring.rb.fd, readable)
        try:
            loop.call_later(0.05, ring.put, 42)
            return await asyncio.wait_for(got, 5)
        finally:
            loop.remove_reader(ring.rb.fd)

    assert u64s(asyncio.run(main())) == [42]


@root_only
def test_verifier_rules_for_ring_buffers() -> None:
    """What the verifier asks of ring buffer writers: bpf_ringbuf_output takes a bounded
    variable size; bpf_ringbuf_reserve only a known constant; a reservation must be submitted
    or discarded on every path."""
    with RingBuf(mmap.PAGESIZE, name="plv_ring") as rb:
        a = Asm()
        a.st_imm(BPF_DW, R10, -16, 0)
        a.st_imm(BPF_DW, R10, -8, 0)
        a.ldx(BPF_W, R3, R1, ebpf.SKB_MARK)
        a.alu_imm("and", R3, 15)
        a.ld_map_fd(R1, rb.fd)
        a.mov_reg(R2, R10)
        a.alu_imm("add", R2, -16)
        a.mov_imm(R4, 0)
        a.call(HELPER_RINGBUF_OUTPUT)
        a.mov_imm(R0, 0)
        a.exit()
        os.close(load_program(a.assemble(), name="plv_ring"))

        a = Asm()
        a.ldx(BPF_W, R2, R1, ebpf.SKB_MARK)
        a.alu_imm("and", R2, 15)
        a.ld_map_fd(R1, rb.fd)
        a.mov_imm(R3, 0)
        a.call(HELPER_RINGBUF_RESERVE)
        a.jmp_imm("jeq", R0, 0, "out")
        a.mov_reg(R1, R0)
        a.mov_imm(R2, 0)
        a.call(HELPER_RINGBUF_SUBMIT)
        a.label("out")
        a.mov_imm(R0, 0)
        a.exit()
        with pytest.raises(BpfError) as e:
            load_program(a.assemble(), name="plv_ring")
        assert "R2 is not a known constant" in e.value.log

        a = Asm()
        a.ld_map_fd(R1, rb.fd)
        a.mov_imm(R2, 8)
        a.mov_imm(R3, 0)
        a.call(HELPER_RINGBUF_RESERVE)
        a.mov_imm(R0, 0)
        a.exit()
        with pytest.raises(BpfError) as e:
            load_program(a.assemble(), name="plv_ring")
        assert "Unreleased reference" in e.value.log


@root_only
def test_ringbuf_map_and_checks() -> None:
    with pytest.raises(ValueError):
        RingBuf(mmap.PAGESIZE * 3)
    with pytest.raises(ValueError):
        RingBuf(mmap.PAGESIZE // 2)
    m = BpfMap(BPF_MAP_TYPE_RINGBUF, 0, 0, 4 * mmap.PAGESIZE, name="plv_ring")
    rb = RingBuf.from_map(m)
    assert rb.fd == m.fd and rb.size == 4 * mmap.PAGESIZE
    again = BpfMap.by_id(struct.unpack_from("<I", ebpf._obj_info(rb.fd, 80), 4)[0])
    assert again.map_type == BPF_MAP_TYPE_RINGBUF and again.max_entries == rb.size
    with RingBuf.from_map(again) as other:
        assert other.drain() == [] and other.pending() == 0
    assert again.fd == -1
    rb.close()
    rb.close()  # twice is harmless
    assert m.fd == -1
    with pytest.raises(ValueError):
        rb.drain()
    with BpfMap(BPF_MAP_TYPE_HASH, 4, 4, 4) as h, pytest.raises(ValueError):
        RingBuf.from_map(h)


def fake_ring(size: int) -> RingBuf:
    """A RingBuf over plain buffers (no kernel): consumer and producer positions, data twice."""
    rb = RingBuf.__new__(RingBuf)
    rb.size = size
    rb._mask = size - 1
    rb._cons_mm = bytearray(8)  # type: ignore[assignment]
    rb._base = 8
    rb._ring = bytearray(8 + 2 * size)  # type: ignore[assignment]
    return rb


def test_drain_stops_at_a_busy_record() -> None:
    rb = fake_ring(64)
    data = memoryview(rb._ring or b"")[8:]
    records = [
        (b"abc", 0),
        (b"12345678", BPF_RINGBUF_DISCARD_BIT),
        (b"busy", BPF_RINGBUF_BUSY_BIT),
        (b"z", 0),
    ]
    pos = 0
    for payload, bits in records:
        struct.pack_into("<II", data, pos, len(payload) | bits, 0)
        data[pos + 8 : pos + 8 + len(payload)] = payload
        pos += (len(payload) + 15) & ~7
    struct.pack_into("<Q", rb._ring or b"", 0, pos)
    assert rb.drain() == [b"abc"]
    assert struct.unpack_from("<Q", rb._cons_mm)[0] == 16 + 16  # past the discarded one, at the busy one
    assert rb.drain() == []
    struct.pack_into("<I", data, 16 + 16, 4)  # committed now
    assert rb.drain() == [b"busy", b"z"]
    assert rb.pending() == 0


# --- batched update and delete ---------------------------------------------------------------------
def k(i: int) -> bytes:
    return struct.pack("<I", i)


def v(i: int) -> bytes:
    return struct.pack("<Q", i * 3)


@root_only
@pytest.mark.parametrize("batched", [True, False])
def test_update_and_delete_batch(batched: bool) -> None:
    with BpfMap(BPF_MAP_TYPE_HASH, 4, 8, 4096, name="plv_batch") as m:
        m._batch_ok = batched  # False: the per-element fallback
        m.update_batch([k(i) for i in range(1000)], [v(i) for i in range(1000)])
        assert dict(m.items()) == {k(i): v(i) for i in range(1000)}
        m.update_batch([k(5), k(2000)], [v(7), v(2000)], BPF_ANY)
        assert m.lookup(k(5)) == v(7) and m.lookup(k(2000)) == v(2000)
        with pytest.raises(BpfError) as e:
            m.update_batch([k(3000), k(6), k(3001)], [v(1)] * 3, BPF_NOEXIST)
        assert e.value.errno == errno.EEXIST
        assert m.lookup(k(3000)) == v(1) and m.lookup(k(3001)) is None  # written up to the refusal
        m.update_batch([], [])
        # absent keys (first, in the middle, last, twice) are skipped; the count is of deleted keys
        gone = [k(4000), k(0), k(1), k(4001), k(4002), k(2), k(1), k(999), k(4003)]
        assert m.delete_batch(gone) == 4
        assert all(m.lookup(key) is None for key in gone)
        assert m.delete_batch([k(i) for i in range(1000)]) == 1000 - 4
        assert m.delete_batch([]) == 0
        assert sorted(m.keys()) == sorted([k(2000), k(3000)])
        with pytest.raises(ValueError):
            m.update_batch([k(1)], [])
        with pytest.raises(ValueError):
            m.delete_batch([b"\0"])


@root_only
def test_batch_on_an_array() -> None:
    """Arrays take batched updates; deletes they refuse either way (EINVAL per element)."""
    with BpfMap(BPF_MAP_TYPE_ARRAY, 4, 8, 8, name="plv_batch") as m:
        m.update_batch([k(i) for i in range(8)], [v(i) for i in range(8)])
        assert dict(m.items()) == {k(i): v(i) for i in range(8)}
        with pytest.raises(BpfError) as e:
            m.update_batch([k(1), k(8)], [v(0), v(0)])
        assert e.value.errno == errno.E2BIG or e.value.errno == errno.EINVAL
        with pytest.raises(BpfError) as e:
            m.delete_batch([k(1)])
        assert e.value.errno == errno.EINVAL
