"""nftables set/map elements over netlink: add and delete in one batch, waiting for the kernel's ACK.

Used for the DR fast path: a new flow's map element must exist before its SYN is forwarded, and the
`nft` command costs ~1.6 ms per call, which would cap new connections near 400/s. Keys of
concatenated types are the fields in order, each padded to a multiple of 4 bytes.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Sequence

from pylvs.netlink.nlmsg import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    attr,
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
NFT_MSG_DELSETELEM = 14
NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_SET_ELEM_DATA = 2
NFTA_SET_ELEM_TIMEOUT = 4
NFTA_DATA_VALUE = 1
NFPROTO_NETDEV = 5
NFPROTO_IPV4 = 2

Element = tuple[bytes, bytes | None, int]  # key, data (maps), timeout in ms (0: the set's default)


def pad4(b: bytes) -> bytes:
    return b + bytes((4 - len(b) % 4) % 4)


def concat(*fields: bytes) -> bytes:
    """A concatenated key: every field padded to 4 bytes, as nftables lays them out."""
    return b"".join(pad4(f) for f in fields)


class NftSet:
    """One named set or map of one table; a persistent netlink socket."""

    def __init__(self, family: int, table: str, name: str) -> None:
        self.family = family
        self.table = table.encode() + b"\0"
        self.name = name.encode() + b"\0"
        self.sock = nf_socket()
        self.sock.settimeout(2.0)
        self.seq = 0
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
        if not elems:
            return
        s0 = self.seq + 1
        self.seq += 3
        body = self._head + self._elems(elems)
        data = b"".join(
            (
                nfmsg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, s0, socket.AF_UNSPEC, NFNL_SUBSYS_NFTABLES, b""),
                nfmsg(
                    (NFNL_SUBSYS_NFTABLES << 8) | msg,
                    NLM_F_REQUEST | NLM_F_ACK | flags,
                    s0 + 1,
                    self.family,
                    0,
                    body,
                ),
                nfmsg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, s0 + 2, socket.AF_UNSPEC, NFNL_SUBSYS_NFTABLES, b""),
            )
        )
        self.sock.send(data)
        while True:  # the ACK (or error) of our element message
            reply = self.sock.recv(65536)
            for kind, seq, off, _end in messages(reply):
                if kind == NLMSG_ERROR and seq == s0 + 1:
                    err = error_of(reply, off)
                    if err:
                        raise OSError(err, f"nft set {self.name[:-1].decode()}: {os.strerror(err)}")
                    return

    def add(self, elems: Sequence[Element]) -> None:
        """Add (or refresh: no EXCL) elements; returns once the kernel has them."""
        self._batch(NFT_MSG_NEWSETELEM, elems, NLM_F_CREATE)

    def delete(self, keys: Sequence[bytes]) -> None:
        """Delete elements by key; a missing one is ENOENT (the caller may ignore it)."""
        self._batch(NFT_MSG_DELSETELEM, [(k, None, 0) for k in keys], 0)

    def close(self) -> None:
        self.sock.close()
