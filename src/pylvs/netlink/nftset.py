"""nftables set/map elements over netlink: add and delete in one batch, waiting for the kernel's ACK.

Used for the DR fast path: a new flow's map element must exist before its SYN is forwarded, and the
`nft` command costs ~1.6 ms per call, which would cap new connections near 400/s. Keys of
concatenated types are the fields in order, each padded to a multiple of 4 bytes.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Sequence

from pylvs.netlink.nlmsg import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    attr,
    attrs,
    error_of,
    messages,
    nested,
    nf_socket,
    nfmsg,
)

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFT_MSG_NEWSETELEM = 12
NFT_MSG_GETSETELEM = 13
NFT_MSG_DELSETELEM = 14
NFT_MSG_DESTROYSETELEM = 30  # a delete that ignores missing elements (Linux 6.3)
NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_SET_ELEM_DATA = 2
NFTA_SET_ELEM_TIMEOUT = 4
NFTA_SET_ELEM_EXPR = 7
NFTA_SET_ELEM_EXPRESSIONS = 11
NFTA_EXPR_NAME = 1
NFTA_EXPR_DATA = 2
NFTA_COUNTER_BYTES = 1
NFTA_COUNTER_PACKETS = 2
NFTA_DATA_VALUE = 1
NFPROTO_NETDEV = 5
NFPROTO_IPV4 = 2

Element = tuple[bytes, bytes | None, int]  # key, data (maps), timeout in ms (0: the set's default)
Counted = tuple[bytes, bytes | None, int, int]  # key, data, packets, bytes (0, 0 without a counter)
_U64 = struct.Struct("!Q")


def pad4(b: bytes) -> bytes:
    return b + bytes((4 - len(b) % 4) % 4)


def concat(*fields: bytes) -> bytes:
    """A concatenated key: every field padded to 4 bytes, as nftables lays them out."""
    return b"".join(pad4(f) for f in fields)


def transaction(
    sock: socket.socket, family: int, parts: Sequence[tuple[int, int, bytes]], seq: int, what: str
) -> None:
    """One nftables transaction on `sock`: batch begin, `parts` (message type, extra flags, body),
    batch end, numbered from `seq`; the kernel applies all of it or none. Returns once every
    message is acknowledged (an aborted batch answers each one too); raises OSError with the first
    errno the kernel reports, or when it does not answer within the socket's timeout."""
    base = NFNL_SUBSYS_NFTABLES << 8
    msgs = [nfmsg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, socket.AF_UNSPEC, NFNL_SUBSYS_NFTABLES, b"")]
    for i, (kind, flags, body) in enumerate(parts):
        msgs.append(nfmsg(base | kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq + 1 + i, family, 0, body))
    last = seq + len(parts) + 1
    msgs.append(nfmsg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, last, socket.AF_UNSPEC, NFNL_SUBSYS_NFTABLES, b""))
    sock.send(b"".join(msgs))
    waiting = set(range(seq + 1, last))
    first = 0
    while waiting:
        try:
            reply = sock.recv(65536)
        except TimeoutError as e:
            raise OSError(f"{what}: no answer from the kernel") from e
        for kind, mseq, off, _end in messages(reply):
            if kind == NLMSG_ERROR and mseq in waiting:
                waiting.discard(mseq)
                first = first or error_of(reply, off)
    if first:
        raise OSError(first, f"{what}: {os.strerror(first)}")


class NftSet:
    """One named set or map of one table; a persistent netlink socket."""

    def __init__(self, family: int, table: str, name: str) -> None:
        self.family = family
        self.table = table.encode() + b"\0"
        self.name = name.encode() + b"\0"
        self.sock = nf_socket()
        self.sock.settimeout(2.0)
        self.seq = 0
        self.destroy_ok = True
        self._head = attr(NFTA_SET_ELEM_LIST_TABLE, self.table) + attr(NFTA_SET_ELEM_LIST_SET, self.name)

    def _elems(self, elems: Sequence[Element]) -> bytes:
        parts = []
        for key, data, timeout in elems:
            e = nested(NFTA_SET_ELEM_KEY, attr(NFTA_DATA_VALUE, key))
            if data is not None:
                e += nested(NFTA_SET_ELEM_DATA, attr(NFTA_DATA_VALUE, data))
            if timeout:
                e += attr(NFTA_SET_ELEM_TIMEOUT, struct.pack("!Q", timeout))
            parts.append(nested(NFTA_LIST_ELEM, e))
        return nested(NFTA_SET_ELEM_LIST_ELEMENTS, *parts)

    def _batch(self, msg: int, elems: Sequence[Element], flags: int) -> None:
        if elems:
            self._send([(msg, elems, flags)])

    def _send(self, parts: Sequence[tuple[int, Sequence[Element], int]]) -> None:
        """One transaction of element messages: the kernel applies all of them or none."""
        seq = self.seq + 1
        self.seq += len(parts) + 2
        msgs = [(msg, flags, self._head + self._elems(elems)) for msg, elems, flags in parts]
        transaction(self.sock, self.family, msgs, seq, f"nft set {self.name[:-1].decode()}")

    def add(self, elems: Sequence[Element]) -> None:
        """Add elements (an element already there with other data is EEXIST: see replace);
        returns once the kernel has them."""
        self._batch(NFT_MSG_NEWSETELEM, elems, NLM_F_CREATE)

    def replace(self, elems: Sequence[Element]) -> None:
        """Elements that exist already, given new data: deleted and added again in one transaction
        (a missing one is ENOENT and nothing changes)."""
        if elems:
            keys = [(k, None, 0) for k, _d, _t in elems]
            self._send([(NFT_MSG_DELSETELEM, keys, 0), (NFT_MSG_NEWSETELEM, elems, NLM_F_CREATE)])

    def delete(self, keys: Sequence[bytes]) -> None:
        """Delete elements by key; a missing one is ENOENT (the caller may ignore it)."""
        self._batch(NFT_MSG_DELSETELEM, [(k, None, 0) for k in keys], 0)

    def put(self, elems: Sequence[Element]) -> None:
        """Elements added, or given new data if their keys are there already: one transaction
        (destroy, then add); on a kernel without the destroy message, add or replace each."""
        if not elems:
            return
        keys = [(k, None, 0) for k, _d, _t in elems]
        if self._destroying([(NFT_MSG_DESTROYSETELEM, keys, 0), (NFT_MSG_NEWSETELEM, elems, NLM_F_CREATE)]):
            return
        for el in elems:
            try:
                self.add([el])
            except FileExistsError:
                self.replace([el])

    def discard(self, keys: Sequence[bytes], chunk: int = 512) -> None:
        """Delete elements whether or not they are there, a transaction per `chunk` keys; on a
        kernel without the destroy message, one delete per key, missing ones ignored."""
        for i in range(0, len(keys), chunk):
            part = keys[i : i + chunk]
            if self._destroying([(NFT_MSG_DESTROYSETELEM, [(k, None, 0) for k in part], 0)]):
                continue
            for k in part:
                try:
                    self.delete([k])
                except FileNotFoundError:
                    pass

    def _destroying(self, parts: Sequence[tuple[int, Sequence[Element], int]]) -> bool:
        """Send a transaction that uses the destroy message (Linux 6.3); False, and from then on
        without trying, on a kernel that does not know it."""
        if not self.destroy_ok:
            return False
        try:
            self._send(parts)
            return True
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self.destroy_ok = False
            return False

    def dump(self) -> list[Counted]:
        """Every element with its counter, read over netlink (5,000 elements: 20 ms of CPU; the
        `nft -j` listing, a process and its JSON, 70-78 ms)."""
        self.seq += 1
        seq = self.seq
        self.sock.send(
            nfmsg(
                (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
                NLM_F_REQUEST | NLM_F_DUMP,
                seq,
                self.family,
                0,
                self._head,
            )
        )
        out: list[Counted] = []
        while True:
            data = self.sock.recv(1 << 20)
            for kind, mseq, off, end in messages(data):
                if mseq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    err = error_of(data, off)
                    raise OSError(err, f"nft set {self.name[:-1].decode()}: {os.strerror(err)}")
                for t, a, b in attrs(data, off + 4, end):  # after the nfgenmsg header
                    if t == NFTA_SET_ELEM_LIST_ELEMENTS:
                        out.extend(_elements(data, a, b))

    def close(self) -> None:
        self.sock.close()


def _value(data: bytes, a: int, b: int) -> bytes:
    for t, x, y in attrs(data, a, b):
        if t == NFTA_DATA_VALUE:
            return data[x:y]
    return b""


def _counter(data: bytes, a: int, b: int) -> tuple[int, int] | None:
    """(packets, bytes) of one expression if it is a counter."""
    name, pk, by = b"", 0, 0
    for t, x, y in attrs(data, a, b):
        if t == NFTA_EXPR_NAME:
            name = data[x:y].rstrip(b"\0")
        elif t == NFTA_EXPR_DATA:
            for u, p, _q in attrs(data, x, y):
                if u == NFTA_COUNTER_PACKETS:
                    pk = _U64.unpack_from(data, p)[0]
                elif u == NFTA_COUNTER_BYTES:
                    by = _U64.unpack_from(data, p)[0]
    return (pk, by) if name == b"counter" else None


def _elements(data: bytes, a: int, b: int) -> list[Counted]:
    out: list[Counted] = []
    for t, x, y in attrs(data, a, b):
        if t != NFTA_LIST_ELEM:
            continue
        key, value, pk, by = b"", None, 0, 0
        for u, p, q in attrs(data, x, y):
            if u == NFTA_SET_ELEM_KEY:
                key = _value(data, p, q)
            elif u == NFTA_SET_ELEM_DATA:
                value = _value(data, p, q)
            elif u == NFTA_SET_ELEM_EXPR:
                c = _counter(data, p, q)
                if c is not None:
                    pk, by = c
            elif u == NFTA_SET_ELEM_EXPRESSIONS:
                for v, r, z in attrs(data, p, q):
                    c = _counter(data, r, z) if v == NFTA_LIST_ELEM else None
                    if c is not None:
                        pk, by = c
        out.append((key, value, pk, by))
    return out
