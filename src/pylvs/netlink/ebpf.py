"""eBPF without a toolchain: a small assembler, maps and program loading over the bpf() syscall
(ctypes), and a cls_bpf direct-action filter on a device's clsact ingress hook (pyroute2).

Why hand assembly: the fast path needs a few dozen instructions per program, and clang/libbpf/bcc
are not available here. Instruction layout follows include/uapi/linux/bpf.h (struct bpf_insn:
opcode byte, dst register in the low nibble and src in the high nibble of the next byte, a signed
16-bit offset and a signed 32-bit immediate, little-endian on the hosts we support).

Everything acts in the caller's current network namespace; TcIngress can instead open its netlink
socket in a named namespace (/run/netns/NAME) through pyroute2 (which forks a short-lived child to
create the socket there), while the program fd is still resolved in this process. run_program runs
a loaded program on one frame without any device (BPF_PROG_TEST_RUN), for tests. RingBuf reads
a BPF ring buffer map's records from user space through mmap (no syscall per record); its fd
polls readable while records wait.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import mmap
import os
import platform
import struct
from types import TracebackType
from typing import Any, NamedTuple

# --- registers -------------------------------------------------------------------------------
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)

# --- opcode fields (uapi bpf_common.h / bpf.h) ------------------------------------------------
_LD, _LDX, _ST, _STX, _ALU, _JMP, _JMP32, _ALU64 = range(8)
BPF_W = 0x00
BPF_H = 0x08
BPF_B = 0x10
BPF_DW = 0x18
_SIZES = (BPF_B, BPF_H, BPF_W, BPF_DW)
_IMM = 0x00
_MEM = 0x60
_ATOMIC = 0xC0
_K = 0x00
_X = 0x08
_END = 0xD0
_TO_LE = 0x00
_TO_BE = 0x08
_CALL = 0x80
_EXIT = 0x90
BPF_ATOMIC_ADD = 0x00  # the imm of an atomic add (no fetch)
# atomic imm modifiers: BPF_FETCH or'd into an ALU op code returns the old value in src;
# exchange and compare-exchange always fetch
BPF_FETCH = 0x01
BPF_XCHG = 0xE0 | BPF_FETCH
BPF_CMPXCHG = 0xF0 | BPF_FETCH
BPF_PSEUDO_MAP_FD = 1

ALU_OPS = {
    "add": 0x00,
    "sub": 0x10,
    "mul": 0x20,
    "div": 0x30,
    "or": 0x40,
    "and": 0x50,
    "lsh": 0x60,
    "rsh": 0x70,
    "neg": 0x80,
    "mod": 0x90,
    "xor": 0xA0,
    "mov": 0xB0,
    "arsh": 0xC0,
}
JMP_OPS = {
    "ja": 0x00,
    "jeq": 0x10,
    "jgt": 0x20,
    "jge": 0x30,
    "jset": 0x40,
    "jne": 0x50,
    "jsgt": 0x60,
    "jsge": 0x70,
    "jlt": 0xA0,
    "jle": 0xB0,
    "jslt": 0xC0,
    "jsle": 0xD0,
}

# --- helper ids: positions in the kernel's enum bpf_func_id -----------------------------------
HELPER_MAP_LOOKUP_ELEM = 1
HELPER_MAP_UPDATE_ELEM = 2
HELPER_MAP_DELETE_ELEM = 3
HELPER_KTIME_GET_NS = 5
HELPER_GET_PRANDOM_U32 = 7
HELPER_GET_SMP_PROCESSOR_ID = 8
HELPER_SKB_STORE_BYTES = 9
HELPER_L3_CSUM_REPLACE = 10
HELPER_L4_CSUM_REPLACE = 11
HELPER_TAIL_CALL = 12
HELPER_CLONE_REDIRECT = 13
HELPER_REDIRECT = 23
HELPER_SKB_LOAD_BYTES = 26
HELPER_CSUM_DIFF = 28
HELPER_SKB_CHANGE_PROTO = 31
HELPER_SKB_CHANGE_TYPE = 32
HELPER_GET_HASH_RECALC = 34
HELPER_SKB_CHANGE_TAIL = 38
HELPER_SKB_PULL_DATA = 39
HELPER_CSUM_UPDATE = 40
HELPER_SET_HASH_INVALID = 41
HELPER_SKB_CHANGE_HEAD = 43
HELPER_SET_HASH = 48
HELPER_SKB_ADJUST_ROOM = 50
HELPER_REDIRECT_MAP = 51
HELPER_FIB_LOOKUP = 69
HELPER_REDIRECT_NEIGH = 152
HELPER_RINGBUF_OUTPUT = 130
HELPER_RINGBUF_RESERVE = 131
HELPER_RINGBUF_SUBMIT = 132
HELPER_RINGBUF_DISCARD = 133
HELPER_KTIME_GET_COARSE_NS = 160

# flags of the checksum helpers (the low 4 bits of `flags` carry the field size)
BPF_F_RECOMPUTE_CSUM = 1 << 0
BPF_F_PSEUDO_HDR = 1 << 4
BPF_F_MARK_MANGLED_0 = 1 << 5
BPF_F_HDR_FIELD_MASK = 0xF
BPF_F_INGRESS = 1 << 0  # bpf_redirect: to the device's receive path instead of transmit

# bpf_skb_adjust_room
BPF_ADJ_ROOM_NET = 0
BPF_ADJ_ROOM_MAC = 1
BPF_F_ADJ_ROOM_FIXED_GSO = 1 << 0
BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 = 1 << 1
BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 = 1 << 2
BPF_F_ADJ_ROOM_ENCAP_L4_GRE = 1 << 3
BPF_F_ADJ_ROOM_ENCAP_L4_UDP = 1 << 4
BPF_F_ADJ_ROOM_NO_CSUM_RESET = 1 << 5
BPF_F_ADJ_ROOM_ENCAP_L2_ETH = 1 << 6

# ring buffer: output/submit/discard flags, and a record header's length word (u32 len, u32 page
# offset; records start 8-byte aligned)
BPF_RB_NO_WAKEUP = 1 << 0
BPF_RB_FORCE_WAKEUP = 1 << 1
BPF_RINGBUF_BUSY_BIT = 1 << 31
BPF_RINGBUF_DISCARD_BIT = 1 << 30
BPF_RINGBUF_HDR_SZ = 8

# tc verdicts (uapi pkt_cls.h)
TC_ACT_UNSPEC = -1
TC_ACT_OK = 0
TC_ACT_RECLASSIFY = 1
TC_ACT_SHOT = 2
TC_ACT_PIPE = 3
TC_ACT_STOLEN = 4
TC_ACT_REDIRECT = 7

# struct __sk_buff field offsets (all __u32 unless noted)
SKB_LEN = 0
SKB_PKT_TYPE = 4
SKB_MARK = 8
SKB_QUEUE_MAPPING = 12
SKB_PROTOCOL = 16
SKB_VLAN_PRESENT = 20
SKB_VLAN_TCI = 24
SKB_VLAN_PROTO = 28
SKB_PRIORITY = 32
SKB_INGRESS_IFINDEX = 36
SKB_IFINDEX = 40
SKB_TC_INDEX = 44
SKB_CB = 48  # __u32 cb[5]
SKB_HASH = 68
SKB_TC_CLASSID = 72
SKB_DATA = 76
SKB_DATA_END = 80
SKB_NAPI_ID = 84
SKB_FAMILY = 88
SKB_DATA_META = 140
SKB_TSTAMP = 152  # __u64
SKB_WIRE_LEN = 160
SKB_GSO_SEGS = 164
SKB_GSO_SIZE = 176

# map and program types, map update flags
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PROG_ARRAY = 3
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
BPF_MAP_TYPE_DEVMAP = 14
BPF_MAP_TYPE_RINGBUF = 27
BPF_PROG_TYPE_SOCKET_FILTER = 1
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_TYPE_SCHED_ACT = 4
BPF_PROG_TYPE_XDP = 6
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2
BPF_F_NO_PREALLOC = 1 << 0
BPF_F_MMAPABLE = 1 << 10  # an array map user space can mmap (its values, no syscall per access)

_PERCPU_TYPES = {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}

_INSN = struct.Struct("<BBhi")
_S16 = (-(1 << 15), (1 << 15) - 1)


def _imm32(imm: int) -> int:
    """An immediate as the signed 32-bit value the instruction holds (0xffffffff is -1)."""
    if not -(1 << 31) <= imm < (1 << 32):
        raise ValueError(f"immediate {imm} does not fit 32 bits")
    return imm - (1 << 32) if imm >= (1 << 31) else imm


def _reg(r: int) -> int:
    if not 0 <= r <= 10:
        raise ValueError(f"no register r{r}")
    return r


def _off(off: int) -> int:
    if not _S16[0] <= off <= _S16[1]:
        raise ValueError(f"offset {off} does not fit 16 bits")
    return off


def _size(size: int) -> int:
    if size not in _SIZES:
        raise ValueError(f"size {size:#x} is none of BPF_B, BPF_H, BPF_W, BPF_DW")
    return size


class Asm:
    """Collects instructions; jumps may target labels resolved at assemble().

    A label marks the next instruction; jump offsets count instruction slots, the 2-slot
    ld_imm64 counting as 2."""

    def __init__(self) -> None:
        # (code, dst, src, off, imm, label of a jump or None)
        self._insns: list[tuple[int, int, int, int, int, str | None]] = []
        self._labels: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._insns)

    def _emit(
        self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0, label: str | None = None
    ) -> None:
        self._insns.append((code, _reg(dst), _reg(src), _off(off), _imm32(imm), label))

    @staticmethod
    def _alu(op: str) -> int:
        try:
            return ALU_OPS[op]
        except KeyError:
            raise ValueError(f"unknown ALU op {op!r}") from None

    @staticmethod
    def _jmp(op: str) -> int:
        try:
            return JMP_OPS[op]
        except KeyError:
            raise ValueError(f"unknown jump op {op!r}") from None

    # moves and arithmetic
    def mov_imm(self, dst: int, imm: int) -> None:
        self._emit(_ALU64 | ALU_OPS["mov"] | _K, dst, imm=imm)

    def mov_reg(self, dst: int, src: int) -> None:
        self._emit(_ALU64 | ALU_OPS["mov"] | _X, dst, src)

    def mov32_imm(self, dst: int, imm: int) -> None:
        self._emit(_ALU | ALU_OPS["mov"] | _K, dst, imm=imm)

    def mov32_reg(self, dst: int, src: int) -> None:
        self._emit(_ALU | ALU_OPS["mov"] | _X, dst, src)

    def alu_imm(self, op: str, dst: int, imm: int) -> None:
        self._emit(_ALU64 | self._alu(op) | _K, dst, imm=imm)

    def alu_reg(self, op: str, dst: int, src: int) -> None:
        self._emit(_ALU64 | self._alu(op) | _X, dst, src)

    def alu32_imm(self, op: str, dst: int, imm: int) -> None:
        self._emit(_ALU | self._alu(op) | _K, dst, imm=imm)

    def alu32_reg(self, op: str, dst: int, src: int) -> None:
        self._emit(_ALU | self._alu(op) | _X, dst, src)

    def be(self, dst: int, bits: int) -> None:
        """dst to big endian (a byte swap on little-endian hosts), keeping the low `bits`."""
        if bits not in (16, 32, 64):
            raise ValueError(f"byte order conversion of {bits} bits")
        self._emit(_ALU | _END | _TO_BE, dst, imm=bits)

    def le(self, dst: int, bits: int) -> None:
        if bits not in (16, 32, 64):
            raise ValueError(f"byte order conversion of {bits} bits")
        self._emit(_ALU | _END | _TO_LE, dst, imm=bits)

    # memory
    def ldx(self, size: int, dst: int, src: int, off: int) -> None:
        self._emit(_LDX | _size(size) | _MEM, dst, src, off)

    def stx(self, size: int, dst: int, src: int, off: int) -> None:
        self._emit(_STX | _size(size) | _MEM, dst, src, off)

    def st_imm(self, size: int, dst: int, off: int, imm: int) -> None:
        self._emit(_ST | _size(size) | _MEM, dst, off=off, imm=imm)

    def atomic_add(self, size: int, dst: int, src: int, off: int) -> None:
        """*(size*)(dst+off) += src, atomically (BPF_W or BPF_DW)."""
        if size not in (BPF_W, BPF_DW):
            raise ValueError("atomic add takes BPF_W or BPF_DW")
        self._emit(_STX | size | _ATOMIC, dst, src, off, BPF_ATOMIC_ADD)

    def _atomic(self, what: str, size: int, dst: int, src: int, off: int, imm: int) -> None:
        if size not in (BPF_W, BPF_DW):
            raise ValueError(f"atomic {what} takes BPF_W or BPF_DW")
        self._emit(_STX | size | _ATOMIC, dst, src, off, imm)

    def atomic_or(self, size: int, dst: int, src: int, off: int) -> None:
        """*(size*)(dst+off) |= src, atomically."""
        self._atomic("or", size, dst, src, off, ALU_OPS["or"])

    def atomic_fetch_or(self, size: int, dst: int, src: int, off: int) -> None:
        """*(size*)(dst+off) |= src, atomically; src receives the old value (zero-extended for BPF_W)."""
        self._atomic("fetch or", size, dst, src, off, ALU_OPS["or"] | BPF_FETCH)

    def atomic_fetch_add(self, size: int, dst: int, src: int, off: int) -> None:
        """*(size*)(dst+off) += src, atomically; src receives the old value."""
        self._atomic("fetch add", size, dst, src, off, ALU_OPS["add"] | BPF_FETCH)

    def atomic_xchg(self, size: int, dst: int, src: int, off: int) -> None:
        """Swap *(size*)(dst+off) and src, atomically."""
        self._atomic("xchg", size, dst, src, off, BPF_XCHG)

    def atomic_cmpxchg(self, size: int, dst: int, src: int, off: int) -> None:
        """If *(size*)(dst+off) == r0 then store src there; either way r0 receives the old value
        (r0 is implicit: load the expected value into it first)."""
        self._atomic("cmpxchg", size, dst, src, off, BPF_CMPXCHG)

    def _ld64(self, dst: int, src: int, imm: int) -> None:
        if not -(1 << 63) <= imm < (1 << 64):
            raise ValueError(f"immediate {imm} does not fit 64 bits")
        imm &= (1 << 64) - 1
        self._emit(_LD | BPF_DW | _IMM, dst, src, imm=imm & 0xFFFFFFFF)
        self._emit(0, imm=imm >> 32)

    def ld_imm64(self, dst: int, imm: int) -> None:
        self._ld64(dst, 0, imm)

    def ld_map_fd(self, dst: int, fd: int) -> None:
        """dst = the map of file descriptor fd (the loader turns it into the map's address)."""
        self._ld64(dst, BPF_PSEUDO_MAP_FD, fd)

    # control flow
    def jmp_imm(self, op: str, dst: int, imm: int, label: str) -> None:
        self._emit(_JMP | self._jmp(op) | _K, dst, imm=imm, label=label)

    def jmp_reg(self, op: str, dst: int, src: int, label: str) -> None:
        self._emit(_JMP | self._jmp(op) | _X, dst, src, label=label)

    def jmp32_imm(self, op: str, dst: int, imm: int, label: str) -> None:
        if op == "ja":
            raise ValueError("ja has no 32-bit form here; use ja()")
        self._emit(_JMP32 | self._jmp(op) | _K, dst, imm=imm, label=label)

    def jmp32_reg(self, op: str, dst: int, src: int, label: str) -> None:
        if op == "ja":
            raise ValueError("ja has no 32-bit form here; use ja()")
        self._emit(_JMP32 | self._jmp(op) | _X, dst, src, label=label)

    def ja(self, label: str) -> None:
        self._emit(_JMP | JMP_OPS["ja"], label=label)

    def call(self, helper: int) -> None:
        self._emit(_JMP | _CALL, imm=helper)

    def exit(self) -> None:
        self._emit(_JMP | _EXIT)

    def label(self, name: str) -> None:
        if name in self._labels:
            raise ValueError(f"label {name!r} defined twice")
        self._labels[name] = len(self._insns)

    def assemble(self) -> bytes:
        out = bytearray()
        for index, (code, dst, src, off, imm, label) in enumerate(self._insns):
            if label is not None:
                target = self._labels.get(label)
                if target is None:
                    raise ValueError(f"jump to unknown label {label!r}")
                if target >= len(self._insns):
                    raise ValueError(f"label {label!r} marks no instruction")
                off = target - (index + 1)
                if not _S16[0] <= off <= _S16[1]:
                    raise ValueError(f"jump to {label!r} is out of range ({off})")
            out += _INSN.pack(code, dst | (src << 4), off, imm)
        return bytes(out)


# --- the bpf() syscall ------------------------------------------------------------------------
_SYSCALL_NR = {"x86_64": 321, "aarch64": 280, "i686": 357, "i386": 357, "armv7l": 386, "riscv64": 280}
_MAP_CREATE, _MAP_LOOKUP_ELEM, _MAP_UPDATE_ELEM, _MAP_DELETE_ELEM, _MAP_GET_NEXT_KEY, _PROG_LOAD = range(6)
_PROG_TEST_RUN = 10
_PROG_GET_FD_BY_ID, _MAP_GET_FD_BY_ID, _OBJ_GET_INFO_BY_FD = 13, 14, 15
_MAP_LOOKUP_BATCH = 24
_MAP_UPDATE_BATCH, _MAP_DELETE_BATCH = 26, 27
_ENOTSUPP = 524  # the kernel's internal "not supported", which can leak to user space

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """A bpf() call failed; `log` is the verifier's log for program loads (else "")."""

    def __init__(self, err: int, message: str, log: str = "") -> None:
        super().__init__(err, message)
        self.log = log


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    nr = _SYSCALL_NR.get(platform.machine())
    if nr is None:
        raise BpfError(errno_mod.ENOSYS, f"bpf(): no syscall number known for {platform.machine()}")
    ret = int(_libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr))))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"{what}: {os.strerror(err)}")
    return ret


def _attr(fmt: str, *values: object) -> ctypes.Array[ctypes.c_char]:
    raw = struct.pack(fmt, *values)
    return ctypes.create_string_buffer(raw, len(raw))


def _addr(buf: ctypes.Array[ctypes.c_char] | None) -> int:
    return 0 if buf is None else ctypes.addressof(buf)


def _obj_info(fd: int, size: int, fields: dict[int, tuple[str, int]] | None = None) -> bytes:
    """BPF_OBJ_GET_INFO_BY_FD: `size` bytes of the object's info (fields: offset -> u32/u64 to
    preset as (struct format, value), e.g. an array's pointer and length for the kernel to fill)."""
    buf = ctypes.create_string_buffer(size)
    for off, (fmt, value) in (fields or {}).items():
        struct.pack_into(fmt, buf, off, value)
    _bpf(_OBJ_GET_INFO_BY_FD, _attr("<IIQ", fd, size, ctypes.addressof(buf)), f"object info of fd {fd}")
    return buf.raw


def program_maps(prog_id: int) -> list[int]:
    """The ids of the maps a loaded program uses (it keeps them alive: e.g. a tc filter's program
    after the process that loaded it died)."""
    fd = _bpf(_PROG_GET_FD_BY_ID, _attr("<3I", prog_id, 0, 0), f"program id {prog_id}")
    try:
        count = struct.unpack_from("<I", _obj_info(fd, 64), 52)[0]
        if not count:
            return []
        ids = (ctypes.c_uint32 * count)()
        # struct bpf_prog_info: nr_map_ids at 52, map_ids (a pointer) at 56
        info = _obj_info(fd, 64, {52: ("<I", count), 56: ("<Q", ctypes.addressof(ids))})
        got = min(count, struct.unpack_from("<I", info, 52)[0])
        return [int(ids[i]) for i in range(got)]
    finally:
        os.close(fd)


def _obj_name(name: str) -> bytes:
    raw = name.encode()
    if len(raw) > 15 or not all(c.isalnum() or c in "_." for c in name) or not name.isascii():
        raise ValueError(f"bpf object name {name!r}: at most 15 of A-Z a-z 0-9 _ .")
    return raw


def possible_cpus() -> int:
    """How many CPUs per-CPU map values hold (the kernel's possible CPUs, not the online ones)."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


_ELEM = "<IIQQQ"  # map_fd, pad, key, value/next_key, flags
_BATCH = struct.Struct("<QQQQIIQQ")  # in_batch, out_batch, keys, values, count, map_fd, elem_flags, flags


class BpfMap:
    """A BPF map owned by this object (its fd is closed by close()).

    Values of per-CPU maps are one slot per possible CPU, each rounded up to 8 bytes, concatenated."""

    def __init__(
        self, map_type: int, key_size: int, value_size: int, max_entries: int, name: str = "", flags: int = 0
    ) -> None:
        attr = _attr("<7I16s", map_type, key_size, value_size, max_entries, flags, 0, 0, _obj_name(name))
        self.fd: int = _bpf(_MAP_CREATE, attr, f"map create {name or map_type}")
        self.map_type = map_type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.name = name
        if map_type in _PERCPU_TYPES:
            self.stored_size = (value_size + 7) // 8 * 8 * possible_cpus()
        else:
            self.stored_size = value_size
        self._batch_ok = True

    @classmethod
    def by_id(cls, map_id: int) -> BpfMap:
        """A map that already exists (another process made it; a program still holds it), by its id."""
        fd = _bpf(_MAP_GET_FD_BY_ID, _attr("<3I", map_id, 0, 0), f"map id {map_id}")
        try:
            info = _obj_info(fd, 80)
        except BpfError:
            os.close(fd)
            raise
        map_type, _id, key_size, value_size, max_entries = struct.unpack_from("<5I", info)
        m = cls.__new__(cls)
        m.fd, m.map_type, m.key_size, m.value_size, m.max_entries = (
            fd,
            map_type,
            key_size,
            value_size,
            max_entries,
        )
        m.name = info[24:40].split(b"\0", 1)[0].decode(errors="replace")
        m.stored_size = (
            (value_size + 7) // 8 * 8 * possible_cpus() if map_type in _PERCPU_TYPES else value_size
        )
        m._batch_ok = True
        return m

    def _key(self, key: bytes) -> ctypes.Array[ctypes.c_char]:
        if len(key) != self.key_size:
            raise ValueError(f"key of {len(key)} bytes for a map with {self.key_size}-byte keys")
        return ctypes.create_string_buffer(key, len(key))

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        if len(value) != self.stored_size:
            raise ValueError(f"value of {len(value)} bytes for a map with {self.stored_size}-byte values")
        k = self._key(key)
        v = ctypes.create_string_buffer(value, len(value))
        _bpf(_MAP_UPDATE_ELEM, _attr(_ELEM, self.fd, 0, _addr(k), _addr(v), flags), "map update")

    def lookup(self, key: bytes) -> bytes | None:
        k = self._key(key)
        v = ctypes.create_string_buffer(self.stored_size)
        try:
            _bpf(_MAP_LOOKUP_ELEM, _attr(_ELEM, self.fd, 0, _addr(k), _addr(v), 0), "map lookup")
        except BpfError as e:
            if e.errno == errno_mod.ENOENT:
                return None
            raise
        return v.raw

    def delete(self, key: bytes) -> bool:
        k = self._key(key)
        try:
            _bpf(_MAP_DELETE_ELEM, _attr(_ELEM, self.fd, 0, _addr(k), 0, 0), "map delete")
        except BpfError as e:
            if e.errno == errno_mod.ENOENT:
                return False
            raise
        return True

    def keys(self) -> list[bytes]:
        out: list[bytes] = []
        cur: ctypes.Array[ctypes.c_char] | None = None
        nxt = ctypes.create_string_buffer(self.key_size)
        # bounded: a map holds at most max_entries keys (an element deleted meanwhile can restart a
        # hash walk, hence the margin)
        for _ in range(2 * self.max_entries + 1):
            try:
                _bpf(_MAP_GET_NEXT_KEY, _attr(_ELEM, self.fd, 0, _addr(cur), _addr(nxt), 0), "map next key")
            except BpfError as e:
                if e.errno == errno_mod.ENOENT:
                    return out
                raise
            out.append(nxt.raw)
            cur = ctypes.create_string_buffer(nxt.raw, self.key_size)
        return out

    def items(self, chunk: int = 256) -> list[tuple[bytes, bytes]]:
        if self._batch_ok:
            try:
                return self._items_batch(chunk)
            except BpfError as e:
                if e.errno not in (errno_mod.EINVAL, errno_mod.EOPNOTSUPP, _ENOTSUPP):
                    raise
                self._batch_ok = False
        out: list[tuple[bytes, bytes]] = []
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                out.append((key, value))
        return out

    def _items_batch(self, chunk: int) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        token = max(self.key_size, 8)  # opaque position: a bucket index for hashes, a key otherwise
        in_batch: ctypes.Array[ctypes.c_char] | None = None
        out_batch = ctypes.create_string_buffer(token)
        count = max(1, chunk)
        for _ in range(self.max_entries + 2):  # every round but the last returns at least 1 element
            keys = ctypes.create_string_buffer(self.key_size * count)
            values = ctypes.create_string_buffer(self.stored_size * count)
            attr = _attr(
                _BATCH.format,
                _addr(in_batch),
                _addr(out_batch),
                _addr(keys),
                _addr(values),
                count,
                self.fd,
                0,
                0,
            )
            done = False
            try:
                _bpf(_MAP_LOOKUP_BATCH, attr, "map lookup batch")
            except BpfError as e:
                if e.errno == errno_mod.ENOSPC and _BATCH.unpack(attr.raw)[4] == 0:
                    count *= 2  # a hash bucket holds more elements than fit: ask for more
                    continue
                if e.errno != errno_mod.ENOENT:
                    raise
                done = True
            got = _BATCH.unpack(attr.raw)[4]
            ks, vs = self.key_size, self.stored_size
            out.extend(
                (keys.raw[i * ks : (i + 1) * ks], values.raw[i * vs : (i + 1) * vs]) for i in range(got)
            )
            if done:
                return out
            in_batch = ctypes.create_string_buffer(out_batch.raw, token)
        return out

    def _batch_attr(self, keys: int, values: int, count: int, flags: int) -> ctypes.Array[ctypes.c_char]:
        """The attr of an update/delete batch: keys and values are addresses (values 0 for deletes)."""
        return _attr(_BATCH.format, 0, 0, keys, values, count, self.fd, flags, 0)

    @staticmethod
    def _batch_done(attr: ctypes.Array[ctypes.c_char], asked: int, e: BpfError) -> int:
        """How many elements a failed update/delete batch handled: the kernel writes the count back
        only when an element failed (then it is below the count asked); a refusal before the first
        element (unknown command, no batch ops for the map type, bad flags) leaves it as it was."""
        done = int(_BATCH.unpack(attr.raw)[4])
        if e.errno in (errno_mod.EOPNOTSUPP, _ENOTSUPP) or done >= asked:
            return 0
        return done

    def update_batch(self, keys: list[bytes], values: list[bytes], flags: int = BPF_ANY) -> None:
        """Write many elements in one BPF_MAP_UPDATE_BATCH (`flags` apply to each, like update's).

        A map type without batch updates (or a kernel before 5.6) gets one update per element.
        An element the kernel refuses raises BpfError; the elements before it are written."""
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys for {len(values)} values")
        for key in keys:
            if len(key) != self.key_size:
                raise ValueError(f"key of {len(key)} bytes for a map with {self.key_size}-byte keys")
        for value in values:
            if len(value) != self.stored_size:
                raise ValueError(f"value of {len(value)} bytes for a map with {self.stored_size}-byte values")
        done = 0
        if keys and self._batch_ok:
            kbuf = ctypes.create_string_buffer(b"".join(keys), self.key_size * len(keys))
            vbuf = ctypes.create_string_buffer(b"".join(values), self.stored_size * len(values))
            attr = self._batch_attr(_addr(kbuf), _addr(vbuf), len(keys), flags)
            try:
                _bpf(_MAP_UPDATE_BATCH, attr, "map update batch")
                return
            except BpfError as e:
                done = self._batch_done(attr, len(keys), e)
                # EINVAL with nothing written: an old kernel's unknown command; else a real refusal
                if not (
                    e.errno in (errno_mod.EOPNOTSUPP, _ENOTSUPP) or (e.errno == errno_mod.EINVAL and not done)
                ):
                    raise BpfError(e.errno or errno_mod.EINVAL, f"{e.strerror} (element {done})") from None
        for key, value in zip(keys[done:], values[done:], strict=True):
            self.update(key, value, flags)

    def delete_batch(self, keys: list[bytes]) -> int:
        """Delete many keys with BPF_MAP_DELETE_BATCH; returns how many of them were there (and are
        now deleted). Absent keys are skipped, not an error: the kernel stops a batch at the first
        absent key (ENOENT), and the rest is sent again without it. A map type without batch
        deletes gets one delete per key."""
        for key in keys:
            if len(key) != self.key_size:
                raise ValueError(f"key of {len(key)} bytes for a map with {self.key_size}-byte keys")
        deleted = 0
        start = 0
        kbuf = ctypes.create_string_buffer(b"".join(keys), self.key_size * len(keys)) if keys else None
        # bounded: every round deletes or skips at least one key
        while start < len(keys) and self._batch_ok:
            rest = len(keys) - start
            attr = self._batch_attr(_addr(kbuf) + start * self.key_size, 0, rest, 0)
            try:
                _bpf(_MAP_DELETE_BATCH, attr, "map delete batch")
                return deleted + rest
            except BpfError as e:
                done = self._batch_done(attr, rest, e)
                if e.errno == errno_mod.ENOENT:
                    deleted += done
                    start += done + 1  # the key at `done` was absent
                    continue
                if not (
                    e.errno in (errno_mod.EOPNOTSUPP, _ENOTSUPP) or (e.errno == errno_mod.EINVAL and not done)
                ):
                    raise BpfError(
                        e.errno or errno_mod.EINVAL, f"{e.strerror} (key {start + done})"
                    ) from None
                deleted += done
                start += done
                break
        return deleted + sum(self.delete(key) for key in keys[start:])

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> BpfMap:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class ArrayMmap:
    """An array map created with BPF_F_MMAPABLE, read and written in place without a syscall per
    access (the offload's connection states and counters, the decision queues). The kernel lays an
    array's values out `stride` bytes apart (the value size rounded up to 8): get/set read and
    write the first u32 (any value size but 8) or u64 (value size 8) of value i, and `buf`
    (bytes) with `stride` serve wider values (struct.unpack_from(buf, i * stride + offset))."""

    def __init__(self, m: BpfMap) -> None:
        if m.map_type != BPF_MAP_TYPE_ARRAY or m.value_size % 4:
            raise ValueError("ArrayMmap: an array map of values a multiple of 4 bytes long")
        page = mmap.PAGESIZE
        self.stride = (m.value_size + 7) // 8 * 8
        size = (self.stride * m.max_entries + page - 1) // page * page
        self.map = m
        self._mm = mmap.mmap(m.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.buf = memoryview(self._mm)
        wide = m.value_size == 8
        self._stride = self.stride // (8 if wide else 4)
        self.values = self.buf.cast("Q" if wide else "I")

    def get(self, i: int) -> int:
        return int(self.values[self._stride * i])

    def set(self, i: int, value: int) -> None:
        self.values[self._stride * i] = value

    def close(self) -> None:
        self.values.release()
        self.buf.release()
        self._mm.close()


class MapWriter:
    """BPF_MAP_UPDATE_BATCH of up to `capacity` elements through buffers made once: the hot path's
    insert (one syscall, no ctypes objects per call). Raises BpfError as update_batch does."""

    def __init__(self, m: BpfMap, capacity: int = 8) -> None:
        self.map = m
        self.capacity = capacity
        self._keys = ctypes.create_string_buffer(m.key_size * capacity)
        self._values = ctypes.create_string_buffer(m.stored_size * capacity)
        self._attr = m._batch_attr(_addr(self._keys), _addr(self._values), 0, BPF_ANY)
        self._nr = _SYSCALL_NR.get(platform.machine())

    def put(self, keys: bytes, values: bytes, count: int) -> None:
        """keys and values: `count` elements each, concatenated."""
        m = self.map
        if (
            not 0 < count <= self.capacity
            or len(keys) != m.key_size * count
            or len(values) != m.stored_size * count
        ):
            raise ValueError("MapWriter.put: keys and values of `count` elements, within capacity")
        if self._nr is None:
            m.update_batch(
                [keys[i * m.key_size : (i + 1) * m.key_size] for i in range(count)],
                [values[i * m.stored_size : (i + 1) * m.stored_size] for i in range(count)],
            )
            return
        ctypes.memmove(self._keys, keys, len(keys))
        ctypes.memmove(self._values, values, len(values))
        struct.pack_into("<I", self._attr, 32, count)  # bpf_attr.batch.count
        ret = _libc.syscall(self._nr, _MAP_UPDATE_BATCH, self._attr, len(self._attr))
        if ret < 0:
            err = ctypes.get_errno()
            raise BpfError(err, f"map update batch: {os.strerror(err)}")


class RingBuf:
    """A BPF ring buffer map (BPF_MAP_TYPE_RINGBUF) read through mmap, without a syscall per record.

    The kernel's layout: page 0 holds the consumer position (ours to write, mapped read-write);
    from page 1 on, a page with the producer position, then the data pages, which the kernel maps
    twice in a row, so a record that wraps past the end reads as one contiguous slice. Positions
    are 64-bit byte counts that only grow; position & (size - 1) is the offset in the data.

    `fd` is the map's fd: it polls readable while records wait (asyncio add_reader, select).
    The object owns the map: close() unmaps and closes it."""

    def __init__(self, max_entries: int, name: str = "") -> None:
        """A new ring of `max_entries` data bytes: a power of 2 and a multiple of the page size."""
        page = mmap.PAGESIZE
        if max_entries < page or max_entries & (max_entries - 1) or max_entries % page:
            raise ValueError(
                f"ring buffer of {max_entries} bytes: a power of 2, at least the page size {page}"
            )
        self._open(BpfMap(BPF_MAP_TYPE_RINGBUF, 0, 0, max_entries, name=name))

    @classmethod
    def from_map(cls, bpf_map: BpfMap) -> RingBuf:
        """Read an existing ring buffer map (e.g. BpfMap.by_id); the RingBuf takes it over."""
        if bpf_map.map_type != BPF_MAP_TYPE_RINGBUF:
            raise ValueError(f"map type {bpf_map.map_type} is not a ring buffer")
        rb = cls.__new__(cls)
        rb._open(bpf_map)
        return rb

    def _open(self, bpf_map: BpfMap) -> None:
        self.map = bpf_map
        self.size = bpf_map.max_entries
        self._mask = self.size - 1
        page = mmap.PAGESIZE
        self._base = page  # where the data starts in the producer mapping
        try:
            self._cons_mm = mmap.mmap(bpf_map.fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            try:
                ring = mmap.mmap(
                    bpf_map.fd, page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
                )
            except BaseException:
                self._cons_mm.close()
                raise
        except OSError as e:
            bpf_map.close()
            raise BpfError(e.errno or errno_mod.EINVAL, f"ring buffer mmap: {e.strerror}") from None
        # the producer page then the data twice; None once closed
        self._ring: mmap.mmap | None = ring

    @property
    def fd(self) -> int:
        return self.map.fd

    def pending(self) -> int:
        """Bytes the producers have reserved and the consumer has not passed yet (headers and
        padding included; records still being written count too)."""
        if self._ring is None:
            raise ValueError("pending on a closed RingBuf")
        return int(_U64.unpack_from(self._ring, 0)[0] - _U64.unpack_from(self._cons_mm, 0)[0])

    def drain(self, limit: int | None = None) -> list[bytes]:
        """The committed records available now, oldest first (at most `limit` of them), and the
        consumer position moved past them. Discarded records are skipped; a record still being
        written (BUSY) ends the drain: it and the ones after it come next time.

        The consumer position is written only after the records are copied out: the kernel may
        reuse the space as soon as it sees the new position. Python has no acquire loads; on
        x86-64 plain loads are ordered, which is what the kernel's layout relies on.

        Records are sliced straight off the mmap (one copy each, faster than a memoryview's
        tobytes); a record that wraps is contiguous in the second mapping of the data."""
        ring = self._ring
        if ring is None:
            raise ValueError("drain on a closed RingBuf")
        cons = _U64.unpack_from(self._cons_mm, 0)[0]
        prod = _U64.unpack_from(ring, 0)[0]
        out: list[bytes] = []
        if cons == prod:
            return out
        left = -1 if limit is None else limit
        mask = self._mask
        base = self._base
        head_of = _U32.unpack_from
        append = out.append
        start = cons
        while cons < prod and left:
            pos = base + (cons & mask)
            head = head_of(ring, pos)[0]
            if head & 0x80000000:  # BPF_RINGBUF_BUSY_BIT: not committed yet
                break
            length = head & 0x3FFFFFFF
            if not head & 0x40000000:  # BPF_RINGBUF_DISCARD_BIT
                pos += 8  # BPF_RINGBUF_HDR_SZ
                append(ring[pos : pos + length])
                left -= 1
            cons += (length + 15) & ~7  # header + length, rounded up to 8
        if cons != start:
            _U64.pack_into(self._cons_mm, 0, cons)
        return out

    def close(self) -> None:
        if self._ring is None:
            return
        self._ring.close()
        self._ring = None
        self._cons_mm.close()
        self.map.close()

    def __enter__(self) -> RingBuf:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


LOG_SIZE = 1 << 20


def load_program(
    insns: bytes, prog_type: int = BPF_PROG_TYPE_SCHED_CLS, name: str = "", license: str = "GPL"
) -> int:
    """Load a program and return its fd (close-on-exec, the caller's to close).

    The first attempt goes without a log (cheaper); a failed load is retried with a 1 MiB verifier
    log at level 1 and raises BpfError carrying it, its tail in the message."""
    if not insns or len(insns) % 8:
        raise ValueError(f"program of {len(insns)} bytes is not whole 8-byte instructions")
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    raw_name = _obj_name(name)
    count = len(insns) // 8

    def attempt(log: ctypes.Array[ctypes.c_char] | None) -> int:
        attr = _attr(
            "<IIQQIIQII16s",
            prog_type,
            count,
            _addr(code),
            _addr(lic),
            1 if log is not None else 0,
            len(log) if log is not None else 0,
            _addr(log),
            0,
            0,
            raw_name,
        )
        return _bpf(_PROG_LOAD, attr, f"program load {name or prog_type}")

    try:
        return attempt(None)
    except BpfError:
        pass
    log = ctypes.create_string_buffer(LOG_SIZE)
    try:
        return attempt(log)  # a load that passes now was refused for a transient cause
    except BpfError as e:
        text = log.value.decode(errors="replace")
        tail = "\n".join(text.rstrip().splitlines()[-12:])
        raise BpfError(
            e.errno or errno_mod.EINVAL, f"{e.strerror}; verifier log tail:\n{tail}", text
        ) from None


class ProgramRun(NamedTuple):
    """What one BPF_PROG_TEST_RUN gave: the verdict, the packet as the program left it, the
    context (__sk_buff) as it left it when one was passed in, and the mean run time."""

    retval: int
    data: bytes
    ctx: bytes | None
    duration_ns: int


_TEST = struct.Struct("<IIIIQQIIIIQQ")  # up to ctx_out; flags, cpu and batch_size stay 0


def run_program(
    prog_fd: int, data: bytes, repeat: int = 1, ctx: bytes | None = None, room: int = 256
) -> ProgramRun:
    """Run a loaded program on one packet in the kernel without any device (BPF_PROG_TEST_RUN).

    For tc programs `data` is a whole Ethernet frame (at least 14 bytes); `ctx`, if given, is a
    struct __sk_buff whose writable fields (mark, priority, ifindex, cb, ...) the run starts with.
    The kernel refuses (EINVAL) an IPv4 frame too short for its IP header. `room` is how much the
    program may grow the packet; a larger output is retried once, with
    the size the kernel asked for."""
    data_in = ctypes.create_string_buffer(data, len(data))
    ctx_in = None if ctx is None else ctypes.create_string_buffer(ctx, len(ctx))
    ctx_out = None if ctx is None else ctypes.create_string_buffer(len(ctx))
    size = len(data) + room
    for _ in range(2):
        data_out = ctypes.create_string_buffer(size)
        attr = _attr(
            _TEST.format,
            prog_fd,
            0,
            len(data),
            size,
            _addr(data_in),
            _addr(data_out),
            max(1, repeat),
            0,
            0 if ctx is None else len(ctx),
            0 if ctx is None else len(ctx),
            _addr(ctx_in),
            _addr(ctx_out),
        )
        try:
            _bpf(_PROG_TEST_RUN, attr, "program test run")
        except BpfError as e:
            fields = _TEST.unpack(attr.raw)
            if e.errno == errno_mod.ENOSPC and fields[3] > size:
                size = fields[3]
                continue
            raise
        fields = _TEST.unpack(attr.raw)
        retval, out_size, duration = fields[1], fields[3], fields[7]
        return ProgramRun(retval, data_out.raw[:out_size], None if ctx_out is None else ctx_out.raw, duration)
    raise BpfError(errno_mod.ENOSPC, "program test run: the output outgrew the room given twice")


# --- tc attach -------------------------------------------------------------------------------
TC_H_CLSACT_INGRESS = 0xFFFFFFF2
TC_H_CLSACT_EGRESS = 0xFFFFFFF3
_ETH_P_ALL = 0x0003


def _netlink_error() -> Any:
    """pyroute2's error class, imported late so that maps and programs work without pyroute2."""
    from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

    return NetlinkError


class TcIngress:
    """A cls_bpf direct-action program on a device's clsact ingress hook, removed on close.

    The filter holds its own reference to the program, so the caller may close prog_fd once this
    returns. With `netns` (a name under /run/netns) the netlink socket is opened in that namespace;
    otherwise the caller's current namespace is used. `prio` tells filters on one hook apart."""

    def __init__(
        self,
        ifindex: int,
        prog_fd: int,
        name: str = "pylvs",
        netns: str | None = None,
        *,
        prio: int = 1,
        replace: bool = False,
    ) -> None:
        self.ifindex = ifindex
        self.netns = netns
        self.prio = prio
        self.created_qdisc = False
        self._attached = False
        NetlinkError = _netlink_error()
        with self._ipr() as ipr:
            try:
                ipr.tc("add", "clsact", ifindex)
                self.created_qdisc = True
            except NetlinkError as e:
                if e.code != errno_mod.EEXIST:
                    raise BpfError(e.code, f"clsact on ifindex {ifindex}: {os.strerror(e.code)}") from None
            try:
                # replace: a filter a crashed process left at this prio and handle gives way
                self._put_filter(ipr, "replace-filter" if replace else "add-filter", prog_fd, name)
            except BpfError:
                if self.created_qdisc:
                    self._del_qdisc(ipr)
                raise
        self._attached = True

    def _put_filter(self, ipr: Any, command: str, prog_fd: int, name: str) -> None:
        try:
            ipr.tc(
                command,
                "bpf",
                self.ifindex,
                1,
                fd=prog_fd,
                name=name,
                parent=TC_H_CLSACT_INGRESS,
                prio=self.prio,
                protocol=_ETH_P_ALL,
                direct_action=True,
            )
        except _netlink_error() as e:
            raise BpfError(e.code, f"bpf filter on ifindex {self.ifindex}: {os.strerror(e.code)}") from None

    def _ipr(self) -> Any:
        from pyroute2 import IPRoute  # type: ignore[import-untyped]

        if self.netns is None:
            return IPRoute()
        return IPRoute(netns=self.netns, flags=0)  # flags=0: never create a missing namespace

    def replace(self, prog_fd: int, name: str = "pylvs") -> None:
        """Swap the filter's program in one netlink request: packets see the old program or the new
        one, never none (the same prio and handle, so close() still removes it)."""
        if not self._attached:
            raise ValueError("replace on a closed TcIngress")
        with self._ipr() as ipr:
            self._put_filter(ipr, "replace-filter", prog_fd, name)

    def _del_qdisc(self, ipr: Any) -> None:
        NetlinkError = _netlink_error()

        try:
            ipr.tc("del", "clsact", self.ifindex)
        except NetlinkError as e:
            if e.code not in (errno_mod.ENOENT, errno_mod.ENODEV, errno_mod.EINVAL):
                raise
        self.created_qdisc = False

    def close(self) -> None:
        """Delete the filter (and the clsact qdisc if this object added it); a device gone already is fine."""
        if not self._attached:
            return
        NetlinkError = _netlink_error()
        self._attached = False
        with self._ipr() as ipr:
            try:
                ipr.tc(
                    "del-filter",
                    "bpf",
                    self.ifindex,
                    1,
                    parent=TC_H_CLSACT_INGRESS,
                    prio=self.prio,
                    protocol=_ETH_P_ALL,
                )
            except NetlinkError as e:
                if e.code not in (errno_mod.ENOENT, errno_mod.ENODEV, errno_mod.EINVAL):
                    raise
            if self.created_qdisc:
                self._del_qdisc(ipr)

    def __enter__(self) -> TcIngress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
