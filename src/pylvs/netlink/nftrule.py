"""nftables rules over netlink: one chain's rules replaced in one transaction.

Written for the NFQUEUE rules (the fast path's new connections, the packet engine's firewall-mark
services). This kernel has the xtables NFQUEUE target (through nft_compat) but not nftables' own
`queue` expression, and the `nft` command cannot write an xtables target; iptables can, but only
into its own tables. Here the rule is built expression by expression (payload, meta, ct, bitwise,
cmp, and the compat `target`), so it lives in a pylvs-owned table like every other object pylvs
creates. (pyroute2's nftables API runs an event loop of its own, which
cannot run inside pylvsd's, so this stays a small hand-written encoder like `nftset`.)

Registers hold data in host order for meta and ct keys and in network order for packet payload,
as the kernel loads them.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from pylvs.netlink.nftset import transaction
from pylvs.netlink.nlmsg import NLM_F_CREATE, attr, nested, nf_socket

NFPROTO_IPV4 = 2
NFT_MSG_NEWRULE = 6
NFT_MSG_DELRULE = 8
NLM_F_APPEND = 0x800
NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2
NFTA_RULE_EXPRESSIONS = 4
NFTA_LIST_ELEM = 1
NFTA_EXPR_NAME = 1
NFTA_EXPR_DATA = 2
NFTA_DATA_VALUE = 1
NFT_REG_1 = 1

# payload: dreg, base, offset, len
NFT_PAYLOAD_NETWORK_HEADER = 1
NFT_PAYLOAD_TRANSPORT_HEADER = 2
# meta: dreg, key
NFT_META_MARK = 3
NFT_META_L4PROTO = 16
# ct: dreg, key
NFT_CT_STATE = 0
CT_STATE_NEW = 1 << 3  # the kernel's state bit of IP_CT_NEW (2 ** (ctinfo + 1))
# cmp: sreg, op, data
NFT_CMP_EQ = 0
NFT_CMP_NEQ = 1
# xtables NFQUEUE, revision 3: queue number, queues in all, flags (u16 each, host order)
NFQ_FLAG_BYPASS = 0x01

_BE32 = struct.Struct("!I")


def _expr(name: str, *attrs: bytes) -> bytes:
    return nested(
        NFTA_LIST_ELEM,
        attr(NFTA_EXPR_NAME, name.encode() + b"\0"),
        nested(NFTA_EXPR_DATA, *attrs),
    )


def payload(base: int, offset: int, length: int) -> bytes:
    """Load `length` bytes of the packet at `offset` from a header (network order) into reg 1."""
    return _expr(
        "payload",
        attr(1, _BE32.pack(NFT_REG_1)),
        attr(2, _BE32.pack(base)),
        attr(3, _BE32.pack(offset)),
        attr(4, _BE32.pack(length)),
    )


def meta(key: int) -> bytes:
    return _expr("meta", attr(2, _BE32.pack(key)), attr(1, _BE32.pack(NFT_REG_1)))


def ct(key: int) -> bytes:
    return _expr("ct", attr(1, _BE32.pack(NFT_REG_1)), attr(2, _BE32.pack(key)))


def bitwise_and(mask: bytes) -> bytes:
    """reg 1 = reg 1 & mask (xor 0)."""
    return _expr(
        "bitwise",
        attr(1, _BE32.pack(NFT_REG_1)),
        attr(2, _BE32.pack(NFT_REG_1)),
        attr(3, _BE32.pack(len(mask))),
        nested(4, attr(NFTA_DATA_VALUE, mask)),
        nested(5, attr(NFTA_DATA_VALUE, bytes(len(mask)))),
    )


def cmp(op: int, data: bytes) -> bytes:
    return _expr(
        "cmp",
        attr(1, _BE32.pack(NFT_REG_1)),
        attr(2, _BE32.pack(op)),
        nested(3, attr(NFTA_DATA_VALUE, data)),
    )


def xt_target(name: str, revision: int, info: bytes) -> bytes:
    """An xtables target through nft_compat (its info padded to 8 bytes, as xtables aligns it)."""
    info += bytes(-len(info) % 8)
    return _expr("target", attr(1, name.encode() + b"\0"), attr(2, _BE32.pack(revision)), attr(3, info))


# -- the chain that holds NFQUEUE rules --------------------------------------------------------------
# Right after iptables' mangle PREROUTING (-150), where users mark packets for firewall-mark
# services, and before dstnat (-100).
AFTER_MANGLE = -149


def queue_chain_text(table: str, chain: str) -> str:
    """`nft -f` text declaring an (empty) IPv4 prerouting filter chain at AFTER_MANGLE; declaring it
    again leaves its rules alone."""
    return (
        f"table ip {table} {{\n  chain {chain} {{\n"
        f"    type filter hook prerouting priority {AFTER_MANGLE}; policy accept;\n  }}\n}}\n"
    )


# -- the matches the fast path needs ---------------------------------------------------------------
def ip_daddr(addr: bytes) -> list[bytes]:
    return [payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4), cmp(NFT_CMP_EQ, addr)]


def l4proto(proto: int) -> list[bytes]:
    return [meta(NFT_META_L4PROTO), cmp(NFT_CMP_EQ, bytes((proto,)))]


def dport(port: int) -> list[bytes]:
    """The destination port of TCP, UDP or SCTP (the same offset in all three)."""
    return [payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2), cmp(NFT_CMP_EQ, struct.pack("!H", port))]


def mark(value: int) -> list[bytes]:
    return [meta(NFT_META_MARK), cmp(NFT_CMP_EQ, struct.pack("=I", value))]


def ct_state_new() -> list[bytes]:
    return [ct(NFT_CT_STATE), bitwise_and(struct.pack("=I", CT_STATE_NEW)), cmp(NFT_CMP_NEQ, bytes(4))]


def nfqueue(queue_num: int, bypass: bool) -> list[bytes]:
    flags = NFQ_FLAG_BYPASS if bypass else 0
    return [xt_target("NFQUEUE", 3, struct.pack("=HHH", queue_num, 1, flags))]


# -- the transaction ------------------------------------------------------------------------------
def replace_rules(
    family: int, table: str, chain: str, rules: Sequence[Sequence[bytes]], timeout: float = 5.0
) -> None:
    """Make `rules` (each a list of expressions) the chain's only rules, in one batch: the kernel
    applies all of it or none. Raises OSError with the kernel's errno if it refuses any part."""
    head = attr(NFTA_RULE_TABLE, table.encode() + b"\0") + attr(NFTA_RULE_CHAIN, chain.encode() + b"\0")
    parts = [(NFT_MSG_DELRULE, 0, head)]
    parts += [
        (NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, head + nested(NFTA_RULE_EXPRESSIONS, *r))
        for r in rules
    ]
    s = nf_socket()
    try:
        s.settimeout(timeout)
        transaction(s, family, parts, 0, f"nft chain {table} {chain}")
    finally:
        s.close()
