"""`pylvsd`: the daemon that plays the kernel's part (rules, engine, rules file, control API).

Start-up: restore the rules file (a bad file: clear message, exit 1), start the engine, then listen on
the unix socket (mode 0600) and optionally on TCP with a bearer token. SIGTERM/SIGINT: stop listening,
drain the engine, save, exit 0. SIGHUP: reload the rules file (and the keepalived config); a bad file
keeps the old state.

Add-ons plug in through small hooks (see docs/daemon.md): `--config` -> pylvs.health.daemon,
`--metrics` -> pylvs.metrics.daemon, `--web` -> pylvs.web.daemon, each a module with
`async def start(state, ...) -> handle` (the handle may have `async reload()` and `async stop()`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pylvs import __version__

log = logging.getLogger("pylvsd")

DEFAULT_SOCKET = "/run/pylvs/pylvsd.sock"
DEFAULT_RULES = "/var/lib/pylvs/rules"
DEFAULT_ENGINE = "proxy"
EXIT_USAGE = 2
SHUTDOWN_TIMEOUT = 10.0  # seconds API requests in flight get to finish at SIGTERM


_YES = ("yes", "y", "true", "1", "on")
_NO = ("no", "n", "false", "0", "off")


def _yes(v: str) -> bool:
    return v.strip().lower() in _YES


def _yesno(v: str) -> str:
    """yes/no (also true/false, on/off, 1/0, as sysconfig files write them)."""
    w = v.strip().lower()
    if w not in _YES + _NO:
        raise argparse.ArgumentTypeError(f"expected yes or no, got {v!r}")
    return "yes" if w in _YES else "no"


def _offload_choice(v: str) -> str:
    """--packet-offload: yes, no (as _yesno), or ahead."""
    if v.strip().lower() == "ahead":
        return "ahead"
    try:
        return _yesno(v)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected yes, no or ahead, got {v!r}") from None


def _queue_num(v: str) -> int:
    if not v.strip().isdigit() or not 0 <= int(v) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a queue number from 0 to 65535, got {v!r}")
    return int(v)


def _hostport(v: str) -> tuple[str, int]:
    host, sep, port = v.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {v!r}")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="pylvsd", description="pylvs daemon: IPVS rules, engine and control API")
    p.add_argument(
        "--socket", default=env("PYLVSD_SOCKET", DEFAULT_SOCKET), help="control socket (mode 0600)"
    )
    p.add_argument(
        "--rules", default=env("PYLVSD_RULES", DEFAULT_RULES), help="rules file (ipvsadm -S format)"
    )
    p.add_argument(
        "--engine",
        default=env("PYLVSD_ENGINE") or None,
        help="none, proxy, packet or fastpath (default proxy)",
    )
    p.add_argument(
        "--fast-path",
        action="store_true",
        help="with --engine packet: the kernel forwards, Python schedules only each new connection"
        " (the same as --engine fastpath)",
    )
    p.add_argument(
        "--queue-bypass",
        type=_yesno,
        default=env("PYLVSD_QUEUE_BYPASS") or None,
        help="with the fast path: when pylvsd is gone (or its queue is full), new connections pass"
        " unscheduled (yes, the default: fail open) or are dropped until it is back (no: fail closed)",
    )
    p.add_argument(
        "--queue-num",
        type=_queue_num,
        default=env("PYLVSD_QUEUE_NUM") or None,
        help="with the fast path: the NFQUEUE number new connections come through (default 7000)",
    )
    p.add_argument(
        "--packet-ring",
        choices=("none", "v2", "v3"),
        default=env("PYLVSD_PACKET_RING", "none"),
        help="--engine packet: read frames through a TPACKET_V2 ring (a frame is read as soon as it"
        " arrives) or a TPACKET_V3 ring (blocks of frames; its 1 ms block timeout slows short"
        " connections) instead of one recv() per frame (default none)",
    )
    p.add_argument(
        "--packet-tx-ring",
        default=env("PYLVSD_PACKET_TX_RING", "yes"),
        type=_yesno,
        help="--engine packet: send frames through a TPACKET_V2 ring (default yes)",
    )
    p.add_argument(
        "--packet-offload",
        default=env("PYLVSD_PACKET_OFFLOAD", "no"),
        type=_offload_choice,
        help="--engine packet: yes: once the core has decided a TCP connection (NAT, FULLNAT, DR, TUN"
        " over IPv4), a tc eBPF program forwards its packets and reports its state changes; ahead: also"
        " queue rr/wrr services' next decisions in the kernel, which then sets connections up from"
        " their SYNs (default no)",
    )
    p.add_argument(
        "--ephemeral",
        action="store_true",
        help="neither read nor write a rules file (dry runs, config checks, tests)",
    )
    p.add_argument("--config", metavar="FILE", help="keepalived.conf to run health checks from")
    p.add_argument("--metrics", metavar="HOST:PORT", type=_hostport, help="serve Prometheus metrics")
    p.add_argument("--web", metavar="HOST:PORT", type=_hostport, help="serve the dashboard")
    p.add_argument(
        "--tcp", metavar="HOST:PORT", type=_hostport, help="also serve the API on TCP (needs a token)"
    )
    p.add_argument("--token", help="bearer token for --tcp")
    p.add_argument("--token-file", metavar="FILE", help="read the --tcp token from FILE")
    p.add_argument(
        "--save-on-stop",
        default=env("PYLVSD_SAVE_ON_STOP", "yes"),
        type=_yesno,
        help="save the rules again when stopping (default yes)",
    )
    p.add_argument(
        "--save-counters",
        default=env("PYLVSD_SAVE_COUNTERS", "no"),
        type=_yesno,
        help="keep counters across restarts in RULES.counters (default no)",
    )
    p.add_argument(
        "--numeric",
        default=env("PYLVSD_NUMERIC", "yes"),
        type=_yesno,
        help="save addresses and ports numerically, as ipvsadm -Sn (default yes)",
    )
    p.add_argument("--log-level", default=env("PYLVSD_LOG_LEVEL", "info"), help="debug, info, warning, error")
    p.add_argument("--version", action="version", version=f"pylvsd {__version__}")
    return p


def _fail(msg: str, code: int = 1) -> int:
    print(f"pylvsd: {msg}", file=sys.stderr)
    return code


def _resolve_engine(name: str | None) -> tuple[type[Any], str]:
    from pylvs.engines import get_engine

    if name is None:
        try:
            return get_engine(DEFAULT_ENGINE), DEFAULT_ENGINE
        except ValueError as e:
            log.warning("%s; falling back to the 'none' engine (rules kept, nothing forwarded)", e)
            return get_engine("none"), "none"
    return get_engine(name), name


def _with_packet_options(engine_cls: Any, name: str, args: argparse.Namespace) -> Any:
    """The packet engine's ring choices (--packet-ring, --packet-tx-ring), or the fast path's queue
    (--queue-num, --queue-bypass), bound to its class; any other engine as it is."""
    if name == "fastpath":
        bypass = None if args.queue_bypass is None else _yes(args.queue_bypass)
        factory = functools.partial(engine_cls, queue_num=args.queue_num, queue_bypass=bypass)
    elif name == "packet":
        ring = None if args.packet_ring == "none" else args.packet_ring
        off = args.packet_offload
        factory = functools.partial(
            engine_cls,
            ring=ring,
            tx_ring=_yes(args.packet_tx_ring),
            offload=off == "ahead" or _yes(off),
            ahead=off == "ahead",
        )
    else:
        return engine_cls
    factory.name = getattr(engine_cls, "name", name)  # type: ignore[attr-defined]
    return factory


def _listen_unix(path: str) -> socket.socket:
    """A listening unix socket at `path`, mode 0600 from the start (no window where others could connect)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if p.exists() or p.is_symlink():
        if not stat.S_ISSOCK(p.lstat().st_mode):
            raise RuntimeError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(path)
        except OSError:
            p.unlink()  # stale: nobody answers
        else:
            raise RuntimeError(f"another pylvsd is already listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _sd_notify(msg: str) -> None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(msg.encode(), addr)


class Addon:
    """An optional add-on module's handle (health checks, metrics, web)."""

    def __init__(self, name: str, handle: Any) -> None:
        self.name = name
        self.handle = handle

    async def reload(self) -> None:
        fn = getattr(self.handle, "reload", None)
        if fn is not None:
            await fn()

    async def stop(self) -> None:
        fn = getattr(self.handle, "stop", None)
        if fn is not None:
            await fn()


def _addon_module(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise RuntimeError(f"{what} is not available in this build ({module}: {e})") from None


async def _start_addons(state: Any, args: argparse.Namespace, token: str | None = None) -> list[Addon]:
    addons: list[Addon] = []
    if args.config:
        mod = _addon_module("pylvs.health.daemon", "--config (keepalived health checks)")
        addons.append(Addon("health", await mod.start(state, args.config)))
    if args.metrics:
        mod = _addon_module("pylvs.metrics.daemon", "--metrics")
        addons.append(Addon("metrics", await mod.start(state, *args.metrics)))
    if args.web:
        mod = _addon_module("pylvs.web.daemon", "--web")
        addons.append(Addon("web", await mod.start(state, *args.web, token=token)))  # edits need the token
    return addons


async def serve(args: argparse.Namespace, engine_cls: type[Any], token: str | None) -> int:
    from aiohttp import web

    from pylvs.daemon.api import make_app
    from pylvs.daemon.counters import restore_counters, save_counters
    from pylvs.daemon.events import EventLog
    from pylvs.daemon.rules import Rules
    from pylvs.daemon.state import DaemonState
    from pylvs.daemon.store import RulesFileError, RulesStore

    loop = asyncio.get_running_loop()
    store: RulesStore | None = None
    rules = Rules()
    if not args.ephemeral:
        store = RulesStore(args.rules, numeric=_yes(args.numeric))
        try:
            store.prepare()
            rules = await loop.run_in_executor(None, store.load)
        except (RulesFileError, OSError, ImportError) as e:
            return _fail(f"cannot restore rules: {e}")
    if _yes(args.save_counters) and store is not None:
        restore_counters(rules, Path(f"{args.rules}.counters"))

    engine = engine_cls(rules.director, loop)
    events = EventLog()
    state = DaemonState(rules, engine, store, events)
    state.engine_name = getattr(engine_cls, "name", "") or args.engine or "none"
    n_svc = len(rules.director.services)
    events.add(
        "start", f"pylvsd {__version__}, engine {state.engine_name}, {n_svc} services restored", "daemon"
    )

    try:
        usock = _listen_unix(args.socket)
    except (RuntimeError, OSError) as e:
        return _fail(f"cannot listen on {args.socket}: {e}")

    try:
        await engine.start()
    except Exception as e:
        usock.close()
        with contextlib.suppress(OSError):
            os.unlink(args.socket)
        log.debug("engine start failed", exc_info=True)
        return _fail(f"engine {state.engine_name} failed to start: {e}")

    runners: list[web.AppRunner] = []
    addons: list[Addon] = []
    rc = 0
    stop = asyncio.Event()
    try:
        # The unix socket is served last: once it answers, everything else is up.
        if args.tcp:
            assert token is not None
            trunner = web.AppRunner(
                make_app(state, token=token),
                access_log=None,
                handle_signals=False,
                shutdown_timeout=SHUTDOWN_TIMEOUT,
            )
            await trunner.setup()
            runners.append(trunner)
            await web.TCPSite(trunner, args.tcp[0], args.tcp[1]).start()
        addons = await _start_addons(state, args, token)
        runner = web.AppRunner(
            make_app(state), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        runners.append(runner)
        await web.SockSite(runner, usock).start()
    except Exception as e:  # an add-on's own error (bad keepalived.conf, port taken...): say it, exit 1
        log.debug("start-up failed", exc_info=True)
        rc = _fail(str(e) or type(e).__name__)
        stop.set()

    async def on_hup() -> None:
        try:
            n = await state.reload("daemon")
            log.info("reloaded %s: %d changes", args.rules, n)
            state.events.add("reload", f"{args.rules}: {n} changes", "daemon")
        except RulesFileError as e:
            log.error("reload refused, old rules kept: %s", e)
            state.events.add("reload-failed", str(e), "daemon")
        except Exception:
            log.exception("reload failed, old rules kept")
        for a in addons:
            try:
                await a.reload()
            except Exception:
                log.exception("%s reload failed", a.name)

    tasks: set[asyncio.Task[None]] = set()

    def hup() -> None:
        t = loop.create_task(on_hup())
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hup)

    async def ticker() -> None:
        while not stop.is_set():
            try:
                wait = state.tick()
            except Exception:
                log.exception("director tick failed")
                wait = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)

    tick_task = loop.create_task(ticker())
    if rc == 0:
        log.info("listening on %s (engine %s, %d services)", args.socket, state.engine_name, n_svc)
        _sd_notify("READY=1")
    await stop.wait()

    _sd_notify("STOPPING=1")
    log.info("stopping")
    tick_task.cancel()
    state.closing.set()
    for a in addons:
        try:
            await a.stop()
        except Exception:
            log.exception("%s stop failed", a.name)
    for r in runners:
        await r.cleanup()
    with contextlib.suppress(OSError):
        os.unlink(args.socket)
    try:
        await engine.stop(drain=True)
    except Exception:
        log.exception("engine stop failed")
    if _yes(args.save_on_stop):
        try:
            await state.save_now()
        except Exception as e:
            log.error("final save failed: %s", e)
    if _yes(args.save_counters) and store is not None:
        save_counters(state.rules, Path(f"{args.rules}.counters"))
    state.events.add("stop", "pylvsd stopped", "daemon")
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = getattr(logging, str(args.log_level).upper(), None)
    if not isinstance(level, int):
        return _fail(f"bad --log-level {args.log_level!r}", EXIT_USAGE)
    logging.basicConfig(level=level, format="pylvsd: %(levelname)s: %(message)s", stream=sys.stderr)

    token = args.token
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as e:
            return _fail(f"cannot read --token-file: {e}", EXIT_USAGE)
    if args.tcp and not token:
        return _fail(
            "--tcp needs --token or --token-file (the TCP API is never open without a token)", EXIT_USAGE
        )
    if token is not None and (len(token) < 8 or not token.isprintable() or " " in token):
        return _fail("the token must be at least 8 printable characters without spaces", EXIT_USAGE)
    if args.config:
        try:
            importlib.import_module("pylvs.health.config")
        except ImportError as e:
            return _fail(f"--config needs pylvs.health.config, which cannot be imported: {e}")
        if not Path(args.config).is_file():
            return _fail(f"--config {args.config}: no such file")

    if args.fast_path:
        if args.engine not in (None, "packet", "fastpath"):
            return _fail("--fast-path goes with --engine packet", EXIT_USAGE)
        args.engine = "fastpath"
    try:
        engine_cls, engine_name = _resolve_engine(args.engine)
    except ValueError as e:
        return _fail(str(e), EXIT_USAGE)
    for opt, value in (("--queue-bypass", args.queue_bypass), ("--queue-num", args.queue_num)):
        if value is not None and engine_name != "fastpath":
            return _fail(
                f"{opt} goes with the fast path (--engine fastpath, or packet --fast-path)", EXIT_USAGE
            )
    engine_cls = _with_packet_options(engine_cls, engine_name, args)

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        rc: int = runner(serve(args, engine_cls, token))
    except KeyboardInterrupt:
        return 0
    return rc


if __name__ == "__main__":
    sys.exit(main())
