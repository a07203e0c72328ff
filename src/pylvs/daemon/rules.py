"""What the kernel holds that ipvsadm can change: the Director plus the sync daemons' settings.

The daemon keeps one live Rules; a transaction is tried first on a throw-away Rules rebuilt from a
snapshot, so a batch either applies whole or not at all.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import replace
from pathlib import Path

from pylvs.core.director import Director, take_snapshot
from pylvs.core.errors import IPVSError, Op
from pylvs.core.snapshot import DaemonView, Snapshot

SYNC_DEFAULT_GROUP = "224.0.0.81"
SYNC_DEFAULT_PORT = 8848
SYNC_DEFAULT_TTL = 1
SYNC_MAX_PACKET = 65535
DAEMON_STATES = ("master", "backup")


def _ifname_mtu(ifname: str) -> int | None:
    """The MTU of a local interface, None when there is no such interface."""
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return None
    try:
        return int(Path(f"/sys/class/net/{ifname}/mtu").read_text().strip())
    except (OSError, ValueError):
        return 1500


class Rules:
    def __init__(self, director: Director | None = None) -> None:
        self.director = director or Director()
        self.daemons: dict[str, DaemonView] = {}

    def snapshot(self) -> Snapshot:
        snap = take_snapshot(self.director)
        daemons = tuple(self.daemons[s] for s in DAEMON_STATES if s in self.daemons)
        return replace(snap, daemons=daemons)

    # -- sync daemons: settings only, no multicast ----------------------------------------------
    def start_daemon(self, d: DaemonView) -> DaemonView:
        if d.state not in DAEMON_STATES:
            raise IPVSError(Op.START_DAEMON, errno.EINVAL, f"bad state {d.state!r}")
        if d.state in self.daemons:
            raise IPVSError(Op.START_DAEMON, errno.EEXIST)
        if not d.mcast_ifn or len(d.mcast_ifn) > 15:
            raise IPVSError(Op.START_DAEMON, errno.EINVAL, "bad interface name")
        if not 0 <= d.syncid <= 255 or not 0 <= d.ttl <= 255 or not 0 <= d.port <= 65535:
            raise IPVSError(Op.START_DAEMON, errno.EINVAL, "syncid, ttl or port out of range")
        group = d.group or SYNC_DEFAULT_GROUP
        try:
            gaddr = ipaddress.ip_address(group)
        except ValueError:
            raise IPVSError(Op.START_DAEMON, errno.EINVAL, "bad multicast group") from None
        if not gaddr.is_multicast:
            raise IPVSError(Op.START_DAEMON, errno.EINVAL, "group is not multicast")
        mtu = _ifname_mtu(d.mcast_ifn)
        if mtu is None:
            raise IPVSError(Op.START_DAEMON, errno.ENODEV, f"no interface {d.mcast_ifn!r}")
        header = 28 if gaddr.version == 4 else 48  # IP + UDP headers
        if d.state == "master":
            lo, default = 1, 1500 - header
        else:
            lo, default = 1024, min(max(mtu, 1500), SYNC_MAX_PACKET) - header
        hi = SYNC_MAX_PACKET - header
        maxlen = min(max(d.maxlen, lo), hi) if d.maxlen else default
        full = replace(
            d,
            group=str(gaddr),
            port=d.port or SYNC_DEFAULT_PORT,
            ttl=d.ttl or SYNC_DEFAULT_TTL,
            maxlen=maxlen,
        )
        self.daemons[d.state] = full
        return full

    def stop_daemon(self, state: str, syncid: int = 0) -> None:
        if state not in self.daemons:
            raise IPVSError(Op.STOP_DAEMON, errno.ESRCH)
        del self.daemons[state]

    # -- rebuild ---------------------------------------------------------------------------------
    @staticmethod
    def from_snapshot(snap: Snapshot) -> Rules:
        """A fresh Rules with the same rules as `snap` (list order kept; counters not copied)."""
        rules = Rules()
        d = rules.director
        for s in snap.services:
            key = s.key()
            d.add_service(key, s.config())
            for dv in reversed(s.dests):  # oldest first, so the newest ends at the front again
                d.add_dest(key, dv.config())
        t = snap.timeouts
        d.set_timeouts(t[0], t[1], t[2])
        rules.daemons = {dv.state: dv for dv in snap.daemons}
        return rules
