"""Restore benchmark: 10,000 services with 100,000 real servers through pylvsd.

Figure of merit: seconds from the start of `pylvsadm -R < FILE` to the end of a `pylvsadm -Ln` that
shows every service and server (goal: under 2 s). Also prints where the time goes: the daemon's batch
alone (one POST /batch of pre-built changes), the snapshot fetch, and the rules file write.

    .venv/bin/python bench/bench_restore.py [--services 10000] [--per 10] [--repeat 3]

Runs pylvsd with --engine none on a temporary socket and rules file; everything stays on this host.
Besides wall-clock seconds it prints CPU seconds (pylvsadm's and pylvsd's user+system time), which
stay meaningful when other work shares the machine.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey
from pylvs.daemon.changes import Change
from pylvs.daemon.client import DaemonBackend, DaemonUnavailable


def vip(i: int) -> str:
    return f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"


def rip(i: int, j: int) -> str:
    return f"172.{16 + j}.{i // 256 % 256}.{i % 256}"


def rules_text(n: int, per: int) -> str:
    lines = []
    for i in range(n):
        lines.append(f"-A -t {vip(i)}:80 -s wlc")
        lines.extend(f"-a -t {vip(i)}:80 -r {rip(i, j)}:8080 -m -w {j + 1}" for j in range(per))
    return "\n".join(lines) + "\n"


def changes(n: int, per: int) -> list[Change]:
    out = []
    for i in range(n):
        k = ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address(vip(i)), 80)
        out.append(Change("add_service", key=k, svc=ServiceConfig("wlc")))
        out.extend(
            Change("add_dest", key=k, dest=DestConfig(ipaddress.ip_address(rip(i, j)), 8080, Fwd.MASQ, j + 1))
            for j in range(per)
        )
    return out


class Daemon:
    def __init__(self, tmp: Path) -> None:
        self.sock = str(tmp / "pylvsd.sock")
        self.rules = tmp / "rules"
        self.rules.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "pylvs.daemon.main", "--engine", "none", "--socket", self.sock]
        argv += ["--rules", str(self.rules), "--log-level", "warning"]
        self.proc = subprocess.Popen(argv)
        b = DaemonBackend(self.sock)
        for _ in range(400):
            try:
                b.status()
                return
            except DaemonUnavailable:
                time.sleep(0.05)
        raise SystemExit("pylvsd did not start")

    def cpu(self) -> float:
        """pylvsd's user+system CPU seconds so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def pylvsadm() -> list[str] | None:
    exe = shutil.which("pylvsadm", path=os.path.dirname(sys.executable))
    if exe is None:
        return None
    try:
        import pylvs.cli.pylvsadm  # noqa: F401
    except ImportError:
        return None
    return [exe]


def breakdown(n: int, per: int) -> None:
    """The daemon's steps for one batch, replayed in-process (process CPU seconds)."""
    import json

    from pylvs.daemon import codec
    from pylvs.daemon.changes import ChangeParser, change_to_compact
    from pylvs.daemon.rules import Rules
    from pylvs.daemon.state import DaemonState
    from pylvs.daemon.store import RulesStore, timeouts_line

    clock = time.process_time
    body = json.dumps({"changes": [change_to_compact(c) for c in changes(n, per)]}, separators=(",", ":"))
    tmp = tempfile.mkdtemp(prefix="pylvs-bench-")
    st = DaemonState(Rules(), store=RulesStore(f"{tmp}/rules"))
    t0 = clock()
    data = json.loads(body)
    t1 = clock()
    parser = ChangeParser()
    parsed = [parser.parse(x) for x in data["changes"]]
    t2 = clock()
    trial = st._trial(parsed)
    st._validate_batch(parsed, trial)
    t3 = clock()
    st._adopt(trial)
    t4 = clock()
    snap = st.save_cache.snapshot(st.director)
    t5 = clock()
    text = st.save_cache.format(snap, True) + timeouts_line(snap.timeouts)
    t6 = clock()
    assert st.store is not None
    st.store.write_text(text)
    t7 = clock()
    full = st.rules.snapshot()
    t8 = clock()
    wire = json.dumps(codec.snapshot_to_compact(full), separators=(",", ":"))
    t9 = clock()
    codec.snapshot_from_compact(json.loads(wire))
    t10 = clock()
    shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"breakdown (cpu s): loads {t1 - t0:.2f}, parse {t2 - t1:.2f}, check {t3 - t2:.2f}, adopt {t4 - t3:.2f},"
        f" file views {t5 - t4:.2f}, format {t6 - t5:.2f}, write {t7 - t6:.2f};"
        f" -Ln: snapshot {t8 - t7:.2f}, encode {t9 - t8:.2f}, client decode {t10 - t9:.2f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--per", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--breakdown", action="store_true", help="only the daemon's steps, in-process")
    args = ap.parse_args()
    if args.breakdown:
        breakdown(args.services, args.per)
        return 0
    n, per = args.services, args.per
    total = n * (1 + per)
    tmp = Path(tempfile.mkdtemp(prefix="pylvs-bench-"))
    try:
        text = rules_text(n, per)
        (tmp / "in.rules").write_text(text)
        print(f"{n} services, {n * per} real servers ({total} lines, {len(text) / 1e6:.1f} MB)")
        cmd = pylvsadm()
        env = {**os.environ, "PYLVS_SOCKET": str(tmp / "pylvsd.sock")}

        runs: list[float] = []
        if cmd is not None:
            for _ in range(args.repeat):
                d = Daemon(tmp)
                d0, c0 = d.cpu(), children_cpu()
                t0 = time.perf_counter()
                with open(tmp / "in.rules") as f:
                    r = subprocess.run([*cmd, "-R"], stdin=f, env=env, capture_output=True, text=True)
                t1 = time.perf_counter()
                c1, d1 = children_cpu(), d.cpu()
                out = subprocess.run([*cmd, "-Ln"], env=env, capture_output=True, text=True)
                t2 = time.perf_counter()
                c2, d2 = children_cpu(), d.cpu()
                shown = sum(1 for line in out.stdout.splitlines() if line.startswith(("TCP ", "  -> 1")))
                d.stop()
                if r.returncode != 0 or shown != total:
                    print(f"pylvsadm -R rc={r.returncode} {r.stderr[:300]!r}; -Ln showed {shown}/{total}")
                    return 1
                runs.append(t2 - t0)
                print(
                    f"  pylvsadm -R {t1 - t0:.2f} s (cpu: pylvsadm {c1 - c0:.2f}, pylvsd {d1 - d0:.2f})"
                    f" + pylvsadm -Ln {t2 - t1:.2f} s (cpu: pylvsadm {c2 - c1:.2f}, pylvsd {d2 - d1:.2f})"
                    f" = {t2 - t0:.2f} s"
                )
            print(f"pylvsadm -R .. -Ln (median of {len(runs)}): {statistics.median(runs):.2f} s")
        else:
            print("pylvsadm not available yet: only the API path is measured")

        # The daemon's side alone: one batch of pre-built changes, then one snapshot.
        ch = changes(n, per)
        api_runs = []
        for _ in range(args.repeat):
            d = Daemon(tmp)
            b = DaemonBackend(d.sock)
            d0 = d.cpu()
            t0 = time.perf_counter()
            b.apply_changes(ch)
            t1 = time.perf_counter()
            d1 = d.cpu()
            snap = b.snapshot()
            t2 = time.perf_counter()
            d2 = d.cpu()
            assert sum(len(s.dests) for s in snap.services) == n * per
            assert len(d.rules.read_text().splitlines()) == total
            d.stop()
            api_runs.append(t2 - t0)
            print(
                f"  POST /batch {t1 - t0:.2f} s (pylvsd cpu {d1 - d0:.2f}: parse, check, apply, save)"
                f" + GET /snapshot {t2 - t1:.2f} s (pylvsd cpu {d2 - d1:.2f})"
            )
        print(f"API batch + snapshot (median of {len(api_runs)}): {statistics.median(api_runs):.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
