"""The connection table (ip_vs_conn.c): entries, their keys, timers and server bookkeeping.

Memory matters here (a million entries must fit in a few hundred MB), so an entry keeps only what
cannot be derived: its lookup key packed into one int (protocol, client and virtual address/port),
the real server object it shares with every other entry of that server, its destination port,
flags, state, timer and persistence links. Addresses are decoded from the key when asked for.

Timers are a lazy wheel of one-second buckets: an entry sits in a bucket no later than its expiry,
and is moved on when its bucket comes up early (packets only push `expires` forward). A re-arm that
brings the expiry *earlier* (a state with a shorter timeout) files it once more.
"""

from __future__ import annotations

import heapq
import ipaddress
import math
from collections.abc import Iterator
from ipaddress import IPv4Address

from pylvs.core.proto import TEMPLATE_NAMES, get_protocol
from pylvs.core.service import RealServer, addr_int
from pylvs.core.types import Fwd, IPAddr, Proto

# Connection flags (IP_VS_CONN_F_*), plus two of ours above the kernel's range.
F_FWD_MASK = 0x0007
F_NOOUTPUT = 0x0010
F_INACTIVE = 0x0020
F_TEMPLATE = 0x1000
F_ONE_PACKET = 0x2000
F_DEAD = 0x4000_0000  # unlinked: expired and gone (engines may still hold a reference)
F_INVALID = 0x2000_0000  # a template whose server went away: never matches again

TEMPLATE_EXPIRE_LATER = 60  # s: an entry that still controls others is looked at again after this
INITIAL_TIMEOUT = 3  # s: the provisional timeout of a new entry before its first state change

_M16 = 0xFFFF
_M32 = 0xFFFF_FFFF
_M48 = (1 << 48) - 1
_M128 = (1 << 128) - 1
_M144 = (1 << 144) - 1
_NAT_LIKE = (Fwd.MASQ, Fwd.FULLNAT)  # replies cross the director: findable by their reply key


def make_key(proto: int, caddr: IPAddr, cport: int, vaddr: IPAddr, vport: int) -> int:
    """Pack (protocol, client addr:port, virtual addr:port) into one int; bit 0 tells IPv6."""
    if isinstance(caddr, IPv4Address):
        return (
            (((((proto << 32) | addr_int(caddr)) << 16 | cport) << 32 | addr_int(vaddr)) << 16) | vport
        ) << 1
    return (
        ((((((proto << 128) | addr_int(caddr)) << 16 | cport) << 128 | addr_int(vaddr)) << 16) | vport) << 1
    ) | 1


def make_key_v4(proto: int, caddr: int, cport: int, vaddr: int, vport: int) -> int:
    """make_key for IPv4 addresses given as ints."""
    return ((((((proto << 32) | caddr) << 16 | cport) << 32 | vaddr) << 16) | vport) << 1


def reply_key(key: int, raddr: IPAddr, rport: int) -> int:
    """out_key(proto, raddr, rport, caddr, cport) of the entry with client-side `key`, from its bits:
    the client's address and port move as one field (they sit side by side in both keys)."""
    if key & 1:
        k = key >> 145  # drop the v6 bit, vport, vaddr: proto | caddr | cport
        client = k & _M144
        if isinstance(raddr, IPv4Address):
            return (((((k >> 144) << 32 | addr_int(raddr)) << 16 | rport) << 32) << 16 | client) << 1
        return (((((k >> 144) << 128 | addr_int(raddr)) << 16 | rport) << 144 | client) << 1) | 1
    k = key >> 49
    client = k & _M48
    if isinstance(raddr, IPv4Address):
        return ((((k >> 48) << 32 | addr_int(raddr)) << 16 | rport) << 48 | client) << 1
    return (((((k >> 48) << 128 | addr_int(raddr)) << 16 | rport) << 128) << 16 | client) << 1 | 1


def split_key(key: int) -> tuple[int, IPAddr, int, IPAddr, int]:
    """The inverse of make_key."""
    v6 = key & 1
    key >>= 1
    width = 128 if v6 else 32
    amask = (1 << width) - 1
    vport = key & _M16
    key >>= 16
    vaddr = key & amask
    key >>= width
    cport = key & _M16
    key >>= 16
    caddr = key & amask
    proto = key >> width
    if v6:
        return proto, ipaddress.IPv6Address(caddr), cport, ipaddress.IPv6Address(vaddr), vport
    return proto, ipaddress.IPv4Address(caddr), cport, ipaddress.IPv4Address(vaddr), vport


class Connection:
    """One entry of the table: a connection, or a persistence template (F_TEMPLATE)."""

    __slots__ = (
        "control",
        "dest",
        "dport",
        "expires",
        "flags",
        "fwmark",
        "key",
        "n_control",
        "state",
        "timeout",
    )

    def __init__(
        self, key: int, dest: RealServer, dport: int, flags: int, timeout: int, fwmark: int = 0
    ) -> None:
        self.key = key
        self.dest = dest
        self.dport = dport
        self.flags = flags
        self.state = 0
        self.timeout = timeout
        self.expires = 0.0
        self.control: Connection | None = None
        self.n_control = 0
        self.fwmark = fwmark

    # a persistence engine's template (PETemplate) has its own; other entries share these
    pe_name = ""
    pe_data = b""

    # -- what the key holds --------------------------------------------------------------------
    @property
    def protocol(self) -> Proto:
        return Proto(split_key(self.key)[0])

    @property
    def caddr(self) -> IPAddr:
        return split_key(self.key)[1]

    @property
    def cport(self) -> int:
        return split_key(self.key)[2]

    @property
    def vaddr(self) -> IPAddr:
        return split_key(self.key)[3]

    @property
    def vport(self) -> int:
        return split_key(self.key)[4]

    @property
    def af(self) -> int:
        return 10 if self.key & 1 else 2

    # -- the rest ------------------------------------------------------------------------------
    @property
    def daddr(self) -> IPAddr:
        return self.dest.addr

    @property
    def fwd(self) -> Fwd:
        return Fwd(self.flags & F_FWD_MASK)

    @property
    def is_template(self) -> bool:
        return bool(self.flags & F_TEMPLATE)

    @property
    def active(self) -> bool:
        return not self.flags & F_INACTIVE

    @property
    def dead(self) -> bool:
        return bool(self.flags & F_DEAD)

    @property
    def state_name(self) -> str:
        if self.flags & F_TEMPLATE:
            return TEMPLATE_NAMES[self.state]
        proto = get_protocol(split_key(self.key)[0])
        return proto.names[self.state] if proto is not None else "NONE"

    def __repr__(self) -> str:
        p, c, cp, v, vp = split_key(self.key)
        kind = "T" if self.is_template else ""
        return f"<Conn{kind} {p} {c}:{cp} {v}:{vp} -> {self.dest.addr}:{self.dport} {self.state_name}>"


class PETemplate(Connection):
    """A template made through a persistence engine: it also matches on the engine's data
    (the SIP Call-ID), and is found in ConnectionTable.pe_templates by (key, pe_data)."""

    __slots__ = ("pe_data", "pe_name")

    def __init__(
        self,
        key: int,
        dest: RealServer,
        dport: int,
        flags: int,
        timeout: int,
        fwmark: int,
        pe_name: str,
        pe_data: bytes,
    ) -> None:
        super().__init__(key, dest, dport, flags, timeout, fwmark)
        self.pe_name = pe_name
        self.pe_data = pe_data


def out_key(proto: int, raddr: IPAddr, rport: int, caddr: IPAddr, cport: int) -> int:
    """Key of a reply (real server -> client), for entries whose replies cross the director."""
    return make_key(proto, raddr, rport, caddr, cport)


# -- server bookkeeping (ip_vs_bind_dest / ip_vs_unbind_dest) ----------------------------------
def load_changed(dest: RealServer) -> None:
    """Tell the server's scheduler its connection counts changed (it refreshes its index)."""
    if dest.available:
        sched = dest.service.scheduler
        if sched is not None:
            sched.load_changed(dest)


_load_changed = load_changed


def bind_dest_quiet(conn: Connection) -> None:
    """bind_dest without telling the scheduler yet. Every scheduler's load_changed only refreshes
    what it derives from the server's current counts, so a caller may bind a new entry, give it
    its first state, and then call load_changed once for both changes (the packet path does this,
    inlined, in packet._new_conn_quiet: one index update per new connection instead of two)."""
    dest = conn.dest
    if conn.flags & F_TEMPLATE:
        dest.persistconns += 1
    else:
        # RealServer.bind_conn, inlined (once per new connection)
        total = dest.total = dest.total + 1
        if dest.u_threshold and total == dest.u_threshold:
            dest.overload = True
        if not conn.flags & F_INACTIVE:
            dest.activeconns += 1


def bind_dest(conn: Connection) -> None:
    bind_dest_quiet(conn)
    _load_changed(conn.dest)


def unbind_dest(conn: Connection) -> None:
    dest = conn.dest
    if conn.flags & F_TEMPLATE:
        dest.persistconns -= 1
    else:
        dest.unbind_conn(was_active=not conn.flags & F_INACTIVE)
    _load_changed(dest)


def set_active(conn: Connection, active: bool) -> None:
    """Move an entry between ActiveConn and InActConn of its server."""
    if active == (not conn.flags & F_INACTIVE):
        return
    if active:
        conn.flags &= ~F_INACTIVE
        conn.dest.activeconns += 1
    else:
        conn.flags |= F_INACTIVE
        conn.dest.activeconns -= 1
    _load_changed(conn.dest)


class ConnectionTable:
    """All entries: lookups by client key, by reply key and by template key, and their timers."""

    def __init__(self) -> None:
        self.conns: dict[int, Connection] = {}  # normal entries by client-side key (newest wins)
        self.templates: dict[int, Connection] = {}  # persistence templates by template key
        # templates of a persistence engine, by (template key, engine data) (ip_vs_sip_ct_match)
        self.pe_templates: dict[tuple[int, bytes], Connection] = {}
        self.out: dict[int, Connection] = {}  # entries whose replies cross the director
        self.detached: set[Connection] = set()  # still alive but no longer findable by key
        self._buckets: dict[int, list[Connection]] = {}
        self._heap: list[int] = []  # bucket seconds present in _buckets
        # The bucket of the current second, after due() found entries in it that expire later in
        # that same second, is "held": its entries live in `_held_heap` ordered by (expiry, position
        # in the bucket), so each due() takes just the prefix that is due, where the plain bucket
        # was re-filed whole on every packet (quadratic in the entries expiring per second). Any
        # change to a held entry (re-armed or freed) sets `_held_dirty`: the next due() turns the
        # heap back into the bucket and takes the general path, with the very same result.
        self._held = -1  # the held second, or -1
        self._held_heap: list[tuple[float, int, Connection]] = []
        self._held_ids: set[int] = set()
        self._held_pos = 0
        self._held_dirty = False
        # The earliest time next_due() may have reached since the owner last read it: every
        # change that can bring next_due() earlier (a new bucket, an entry filed into the held
        # bucket, the held bucket turning dirty) lowers it; the Director sets it back to +inf
        # when it has read next_due() (tick, advance). Until it is reached, no packet needs to
        # ask next_due() whether a timer is due (Director.advance).
        self.wake = math.inf

    def __len__(self) -> int:
        return len(self.conns) + len(self.templates) + len(self.pe_templates) + len(self.detached)

    def __iter__(self) -> Iterator[Connection]:
        """Every live entry (our stable order: connections, templates, detached)."""
        yield from self.conns.values()
        yield from self.templates.values()
        yield from self.pe_templates.values()
        yield from self.detached

    # -- lookups ---------------------------------------------------------------------------------
    def lookup_in(
        self, proto: int, caddr: IPAddr, cport: int, vaddr: IPAddr, vport: int
    ) -> Connection | None:
        return self.conns.get(make_key(proto, caddr, cport, vaddr, vport))

    def lookup_out(
        self, proto: int, saddr: IPAddr, sport: int, caddr: IPAddr, cport: int
    ) -> Connection | None:
        """The entry a packet from saddr:sport to a client belongs to (ip_vs_conn_out_get).

        NAT entries answer from the real server's address and port. Other methods (DR, tunnel)
        answer from the virtual address and port: when such a reply happens to cross the director
        (it is the real servers' gateway), the kernel finds the entry by that and counts it.
        """
        conn = self.out.get(make_key(proto, saddr, sport, caddr, cport))
        if conn is not None:
            return conn
        conn = self.conns.get(make_key(proto, caddr, cport, saddr, sport))
        if conn is not None and (conn.flags & F_FWD_MASK) not in _NAT_LIKE:
            return conn
        return None

    def lookup_out_v4(self, proto: int, saddr: int, sport: int, caddr: int, cport: int) -> Connection | None:
        """lookup_out for IPv4 addresses given as ints."""
        conn = self.out.get(make_key_v4(proto, saddr, sport, caddr, cport))
        if conn is not None:
            return conn
        conn = self.conns.get(make_key_v4(proto, caddr, cport, saddr, sport))
        if conn is not None and (conn.flags & F_FWD_MASK) not in _NAT_LIKE:
            return conn
        return None

    # -- linking ---------------------------------------------------------------------------------
    def hash(self, conn: Connection) -> None:
        """Make a new entry findable (a same-key entry already there is pushed aside, still alive)."""
        if conn.flags & F_TEMPLATE:
            if conn.pe_data:
                pk = (conn.key, conn.pe_data)
                old = self.pe_templates.get(pk)
                self.pe_templates[pk] = conn
            else:
                old = self.templates.get(conn.key)
                self.templates[conn.key] = conn
        else:
            old = self.conns.get(conn.key)
            self.conns[conn.key] = conn
            if (conn.flags & F_FWD_MASK) in _NAT_LIKE:
                self.out[reply_key(conn.key, conn.dest.addr, conn.dport)] = conn
        if old is not None and old is not conn:
            self.detached.add(old)

    def detach(self, conn: Connection) -> None:
        """Keep an entry alive but stop finding it by its key."""
        if conn.flags & F_TEMPLATE and conn.pe_data:
            pk = (conn.key, conn.pe_data)
            if self.pe_templates.get(pk) is conn:
                del self.pe_templates[pk]
                self.detached.add(conn)
            return
        table = self.templates if conn.flags & F_TEMPLATE else self.conns
        if table.get(conn.key) is conn:
            del table[conn.key]
            self.detached.add(conn)

    def unhash(self, conn: Connection) -> None:
        if conn.flags & F_TEMPLATE:
            if conn.pe_data:
                pk = (conn.key, conn.pe_data)
                if self.pe_templates.get(pk) is conn:
                    del self.pe_templates[pk]
            elif self.templates.get(conn.key) is conn:
                del self.templates[conn.key]
        else:
            if self.conns.get(conn.key) is conn:
                del self.conns[conn.key]
            if (conn.flags & F_FWD_MASK) in _NAT_LIKE:  # only these are in `out` (see hash)
                ok = reply_key(conn.key, conn.dest.addr, conn.dport)
                if self.out.get(ok) is conn:
                    del self.out[ok]
        self.detached.discard(conn)

    def invalidate_template(self, tpl: Connection) -> None:
        """The template's server is gone: it lives on until its timer but never matches again."""
        if not tpl.flags & F_INVALID:
            tpl.flags |= F_INVALID
            self.detach(tpl)

    # -- timers ----------------------------------------------------------------------------------
    def arm(self, conn: Connection, now: float) -> None:
        """Re-arm the entry's timer to its current timeout from now."""
        old = conn.expires
        new = now + conn.timeout
        conn.expires = new
        if self._held >= 0 and id(conn) in self._held_ids:
            self._dirty_held()
        # a later expiry never lands in an earlier second: the int()s only when it moved earlier
        if old == 0.0 or (new < old and int(new) < int(old)):
            self._file(conn, int(new))

    def _dirty_held(self) -> None:
        self._held_dirty = True  # the held bucket changes: back to the general path
        if self._held < self.wake:
            self.wake = float(self._held)  # next_due() is now its second

    def _file(self, conn: Connection, second: int) -> None:
        if second == self._held:  # appended at the end of the held bucket
            self._held_pos += 1
            heapq.heappush(self._held_heap, (conn.expires, self._held_pos, conn))
            self._held_ids.add(id(conn))
            if conn.expires < self.wake:
                self.wake = conn.expires
            return
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = []
            heapq.heappush(self._heap, second)
            if second < self.wake:
                self.wake = float(second)
        bucket.append(conn)

    def next_expiry(self) -> float | None:
        """When the earliest bucket comes up (an entry in it may turn out to expire later)."""
        return float(self._heap[0]) if self._heap else None

    def next_due(self) -> float | None:
        """The earliest time due() can return something: next_expiry, or later for a held bucket."""
        heap = self._heap
        if not heap:
            return None
        if heap[0] == self._held and not self._held_dirty:
            return self._held_heap[0][0]
        return float(heap[0])

    def _unhold(self) -> None:
        """Turn the held heap back into its bucket, in bucket order."""
        second = self._held
        self._held = -1
        entries = sorted(self._held_heap, key=lambda e: e[1])
        self._buckets[second] = [c for _, _, c in entries]
        self._held_heap = []
        self._held_ids = set()
        self._held_dirty = False

    def _due_held(self, now: float) -> list[tuple[float, Connection]]:
        """due() when only the (clean) held bucket can have due entries."""
        hh = self._held_heap
        out: list[tuple[float, Connection]] = []
        ids = self._held_ids
        while hh and hh[0][0] <= now:
            when, _, conn = heapq.heappop(hh)
            ids.discard(id(conn))
            out.append((when, conn))  # (expiry, position) order is the stable sort's order
        if not hh:  # the bucket is used up, as when nothing is re-filed into it
            second = heapq.heappop(self._heap)
            del self._buckets[second]
            self._held = -1
            self._held_ids = set()
        for _, conn in out:
            conn.expires = 0.0
        return out

    def due(self, now: float) -> list[tuple[float, Connection]]:
        """(expiry time, entry) for entries whose timer ran out by `now`, in expiry order.

        Their wheel entries are used up: an entry kept alive must be armed again (expire does).
        Entries found in a bucket that came up early are filed again.
        """
        heap, buckets = self._heap, self._buckets
        if self._held >= 0:
            # an expiry handled at its own (past) time can re-arm an entry into an earlier bucket
            if not self._held_dirty and now < self._held + 1 and heap[0] == self._held:
                return self._due_held(now)
            self._unhold()
        due: dict[int, Connection] = {}
        later: dict[int, Connection] = {}
        while heap and heap[0] <= now:
            second = heapq.heappop(heap)
            for conn in buckets.pop(second):
                if conn.flags & F_DEAD:
                    continue
                # an entry filed twice (its expiry was brought forward) may come up twice
                (due if conn.expires <= now else later)[id(conn)] = conn
        held: list[Connection] = []
        for conn in later.values():
            if id(conn) not in due:
                second = int(conn.expires)
                if second <= now:  # the current second: its bucket is held (see __init__)
                    held.append(conn)
                else:
                    self._file(conn, second)
        if held:
            second = int(now)
            buckets[second] = []  # the entries live in the held heap meanwhile
            heapq.heappush(heap, second)
            self._held = second
            hh = self._held_heap = [(c.expires, i, c) for i, c in enumerate(held)]
            heapq.heapify(hh)
            self._held_pos = len(held)
            self._held_ids = {id(c) for c in held}
            self._held_dirty = False
        out = sorted(((c.expires, c) for c in due.values()), key=lambda x: x[0])
        for _, conn in out:
            conn.expires = 0.0  # its timer entry is used up: the next arm files it again
        return out

    # -- expiry (ip_vs_conn_expire) --------------------------------------------------------------
    def expire(self, conn: Connection, now: float) -> bool:
        """The entry's timer ran out (or it is expired at once). Returns True when it was freed.

        An entry that still controls others is kept and looked at again in 60 s; its timeout stays
        60 s from then on (the kernel's quirk). Otherwise it is unlinked and its server released.
        """
        if conn.flags & F_DEAD:
            return True
        if conn.n_control:
            conn.timeout = TEMPLATE_EXPIRE_LATER
            self.arm(conn, now)
            return False
        self.free(conn)
        return True

    def free(self, conn: Connection) -> None:
        """Unlink an entry that controls nothing and release its server (and its template's count)."""
        if self._held >= 0 and id(conn) in self._held_ids:
            self._dirty_held()
        self.unhash(conn)
        conn.flags |= F_DEAD
        ctl = conn.control
        if ctl is not None:
            ctl.n_control -= 1
            conn.control = None
        unbind_dest(conn)
