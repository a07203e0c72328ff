"""`pylvs top`: a live terminal view of pylvsd's services and real servers, busiest first.

Like a refreshing `pylvsadm -Ln --rate`, with each real server's weight, connections and health, and
the daemon's last events. The screen is drawn by `render()`, a pure function of what the daemon
reported, so it is tested without a terminal; curses only shows its lines and reads keys.
"""

from __future__ import annotations

import argparse
import curses
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pylvs.core.snapshot import DestView, ServiceView, Snapshot
from pylvs.core.types import AF_INET6, Fwd

HELP = "live view of pylvsd: services and real servers sorted by connections per second"

# Sort keys: (key, name, what it reads from a service or a real server). Bigger first.
SORTS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "c": ("conn/s", lambda v: v.rates[0]),
    "p": ("pkt/s", lambda v: v.rates[1] + v.rates[2]),
    "b": ("bytes/s", lambda v: v.rates[3] + v.rates[4]),
    "a": ("active", lambda v: _active(v)),
    "t": ("total conns", lambda v: v.stats[0]),
    "n": ("name", lambda v: _name(v)),
}
KEYS_HELP = "q quit  c conn/s  p pkt/s  b bytes/s  a active  t total  n name  r reverse  / filter  Esc clear"
EVENTS_SHOWN = 5
_PROTO = {6: "TCP", 17: "UDP", 132: "SCTP"}


def _active(v: ServiceView | DestView) -> int:
    if isinstance(v, DestView):
        return v.activeconns
    return sum(d.activeconns for d in v.dests)


def _host(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def service_title(s: ServiceView) -> str:
    if s.fwmark:
        return f"FWM  {s.fwmark}" + (" IPv6" if s.af == AF_INET6 else "")
    return f"{_PROTO.get(s.protocol, str(s.protocol))}  {_host(s.addr, s.port)}"


def _name(v: ServiceView | DestView) -> str:
    return service_title(v) if isinstance(v, ServiceView) else _host(v.addr, v.port)


def _fwd(v: int) -> str:
    try:
        return Fwd(v).label
    except ValueError:
        return str(v)


def human(n: int) -> str:
    """A rate in 5 characters at most: 999, 1.2K, 34M."""
    for unit, size in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            v = n / size
            return f"{v:.1f}{unit}" if v < 10 else f"{v:.0f}{unit}"
    return str(n)


@dataclass
class View:
    """What the operator chose: sort key, direction, filter."""

    sort: str = "c"
    reverse: bool = False
    filter: str = ""
    editing: bool = False  # typing a filter
    draft: str = ""


@dataclass
class Frame:
    """What the daemon reported last."""

    snapshot: Snapshot | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    source: str = ""
    when: float = 0.0


def _matches(text: str, words: Sequence[str]) -> bool:
    low = text.lower()
    return all(w in low for w in words)


def visible(snap: Snapshot, view: View) -> list[tuple[ServiceView, list[DestView]]]:
    """Services and their servers, filtered and sorted as the view asks."""
    words = view.filter.lower().split()
    key = SORTS[view.sort][1]
    # Names sort A to Z; figures biggest first. `r` turns either round.
    desc = (view.sort != "n") != view.reverse
    out = []
    for s in snap.services:
        dests = list(s.dests)
        if words and not _matches(f"{service_title(s)} {s.scheduler}", words):
            dests = [d for d in dests if _matches(_host(d.addr, d.port), words)]
            if not dests:
                continue
        # By name first, then (stable) by the key: equal figures stay in name order.
        dests.sort(key=_name)
        if view.sort != "n" or desc:
            dests.sort(key=key, reverse=desc)
        out.append((s, dests))
    out.sort(key=lambda sd: _name(sd[0]))
    if view.sort != "n" or desc:
        out.sort(key=lambda sd: key(sd[0]), reverse=desc)
    return out


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[: max(width - 1, 0)] + "…"


def render(frame: Frame, view: View, width: int, height: int, now: float | None = None) -> list[str]:
    """The whole screen as lines (at most `height`, each at most `width` characters)."""
    lines: list[str] = []
    clock = time.strftime("%H:%M:%S", time.localtime(frame.when or now or time.time()))
    sort_name = SORTS[view.sort][0] + (" (reversed)" if view.reverse else "")
    snap = frame.snapshot
    nsvc = len(snap.services) if snap else 0
    ndest = sum(len(s.dests) for s in snap.services) if snap else 0
    lines.append(
        f"pylvs top  {frame.source}  {clock}  {nsvc} services, {ndest} real servers  sort: {sort_name}"
    )
    if view.editing:
        lines.append(f"filter: {view.draft}_")
    else:
        lines.append(f"filter: {view.filter or '-'}    {KEYS_HELP}")
    if frame.error:
        lines.append(f"! {frame.error}")
    if snap is not None:
        r = snap.rates
        lines.append(
            f"total: {human(r[0])} conn/s  in {human(r[1])} pkt/s {human(r[3])}B/s  "
            f"out {human(r[2])} pkt/s {human(r[4])}B/s  {snap.stats[0]} conns since zero"
        )
    lines.append("")
    head = f"{'Prot LocalAddress:Port':<30} {'Sched':<12} {'Weight':>6} {'Active':>7} {'InAct':>7} "
    head += f"{'CPS':>6} {'InPPS':>6} {'OutPPS':>6} {'InBPS':>6} {'OutBPS':>6}  Health"
    lines.append(head)
    lines.append(f"{'  -> RemoteAddress:Port':<30} {'Forward':<12}")
    events = frame.events[-EVENTS_SHOWN:]
    room = height - len(lines) - (len(events) + 2 if events else 0)
    body: list[str] = []
    if snap is not None:
        shown = visible(snap, view)
        for s, dests in shown:
            flags = f"{s.scheduler}" + (f" p{s.timeout}" if s.flags & 1 else "")
            r = s.rates
            body.append(
                f"{service_title(s):<30} {flags:<12} {'':>6} {_active(s):>7} {sum(d.inactconns for d in s.dests):>7} "
                f"{human(r[0]):>6} {human(r[1]):>6} {human(r[2]):>6} {human(r[3]):>6} {human(r[4]):>6}"
            )
            for d in dests:
                r = d.rates
                body.append(
                    f"{'  -> ' + _host(d.addr, d.port):<30} {_fwd(d.fwd):<12} {d.weight:>6} {d.activeconns:>7} "
                    f"{d.inactconns:>7} {human(r[0]):>6} {human(r[1]):>6} {human(r[2]):>6} {human(r[3]):>6} "
                    f"{human(r[4]):>6}  {d.health or '-'}"
                )
        if not shown:
            body.append("(no virtual services)" if not snap.services else "(nothing matches the filter)")
    if len(body) > room:
        more = len(body) - room + 1
        body = [*body[: max(room - 1, 0)], f"... {more} more lines (filter with /)"]
    lines += body
    if events:
        lines += ["", "last events:"]
        for e in events:
            t = time.strftime("%H:%M:%S", time.localtime(float(e.get("time", 0))))
            lines.append(f"  {t} {e.get('source', '')} {e.get('kind', '')} {e.get('detail', '')}")
    return [_fit(line, width) for line in lines[:height]]


def handle_key(view: View, key: int) -> bool:
    """Apply one key press; False when the operator quits."""
    if view.editing:
        if key in (10, 13, curses.KEY_ENTER):
            view.filter, view.editing = view.draft.strip(), False
        elif key == 27:  # Esc: leave the filter as it was
            view.editing = False
        elif key in (curses.KEY_BACKSPACE, 127, 8):
            view.draft = view.draft[:-1]
        elif 32 <= key < 127:
            view.draft += chr(key)
        return True
    ch = chr(key) if 0 <= key < 256 else ""
    if ch in ("q", "Q"):
        return False
    if ch in SORTS:
        view.sort = ch
    elif ch == "r":
        view.reverse = not view.reverse
    elif ch == "/":
        view.editing, view.draft = True, view.filter
    elif key == 27:
        view.filter = ""
    return True


class Poller:
    """Fetches the snapshot and new events from pylvsd over its control API."""

    def __init__(self, socket_path: str | None) -> None:
        from pylvs.daemon.client import DaemonBackend

        self.backend = DaemonBackend(socket_path, source="pylvsadm", timeout=10)
        self.frame = Frame(source=self.backend.socket_path)
        self.last_seq = 0

    def poll(self) -> Frame:
        from pylvs.core.errors import IPVSError
        from pylvs.daemon.client import DaemonError, DaemonUnavailable

        f = self.frame
        try:
            f.snapshot = self.backend.snapshot()
            got = self.backend.request("GET", f"/events?since={self.last_seq}&limit={EVENTS_SHOWN}")
            new = got.get("events", []) if isinstance(got, dict) else []
            if new:
                self.last_seq = max(int(e.get("seq", 0)) for e in new)
                f.events = (f.events + new)[-EVENTS_SHOWN:]
            f.error = ""
        except DaemonUnavailable as e:
            f.error = str(e)
        except (DaemonError, IPVSError, ValueError, KeyError, TypeError) as e:
            f.error = f"pylvsd answered badly: {e}"
        f.when = time.time()
        return f


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--socket", help="pylvsd's control socket (default $PYLVS_SOCKET or /run/pylvs/pylvsd.sock)"
    )
    parser.add_argument(
        "-d", "--delay", type=float, default=1.0, help="seconds between refreshes (default 1)"
    )
    parser.add_argument(
        "-s", "--sort", choices=sorted(SORTS), default="c", help="initial sort key (default c)"
    )
    parser.add_argument("-f", "--filter", default="", help="show only services/servers matching these words")
    parser.add_argument("--once", action="store_true", help="print one screen to standard output and exit")
    parser.add_argument(
        "--width", type=int, default=0, help="with --once: line width (default: the terminal's)"
    )


def _curses_main(stdscr: Any, poller: Poller, view: View, delay: float) -> None:
    curses.curs_set(0)
    stdscr.timeout(100)
    next_poll = 0.0
    frame = poller.frame
    dirty = True
    while True:
        now = time.monotonic()
        if now >= next_poll:
            frame = poller.poll()
            next_poll = now + delay
            dirty = True
        if dirty:
            h, w = stdscr.getmaxyx()
            stdscr.erase()
            for y, line in enumerate(render(frame, view, w - 1, h)):
                attr = curses.A_BOLD if y == 0 or line.startswith(("Prot", "  -> Remote")) else 0
                if line.startswith("!"):
                    attr = curses.A_REVERSE
                try:
                    stdscr.addstr(y, 0, line, attr)
                except curses.error:
                    pass  # the last cell of the screen: curses complains, the text is there
            stdscr.refresh()
            dirty = False
        key = stdscr.getch()
        if key == -1:
            continue
        if key == curses.KEY_RESIZE:
            dirty = True
            continue
        if not handle_key(view, key):
            return
        dirty = True


def run(args: argparse.Namespace) -> int:
    if not args.delay > 0 or args.delay > 3600:
        print("pylvs top: --delay must be between 0 and 3600 seconds", file=sys.stderr)
        return 2
    view = View(sort=args.sort, filter=args.filter)
    poller = Poller(args.socket)
    if args.once:
        import shutil

        frame = poller.poll()
        width = args.width or shutil.get_terminal_size((120, 40)).columns
        for line in render(frame, view, width, 10**6):
            print(line)
        return 1 if frame.error else 0
    if not sys.stdout.isatty():
        print("pylvs top: standard output is not a terminal (use --once)", file=sys.stderr)
        return 2
    curses.wrapper(_curses_main, poller, view, args.delay)
    return 0
