"""The keepalived oracle lab rebuilt in network namespaces of our own (root only).

Director namespace D (192.168.201.1, no default route: nothing it sends can leave) and real-server
namespace R (192.168.201.10-13 and .20) joined by a veth; lab_servers.py serves in R. Names are
unique ("plv" + random hex) and everything is removed on exit, even after a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pylvs.lab.netns import Netns

ORACLE = Path(__file__).resolve().parent.parent / "data" / "oracle" / "keepalived"


def can_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


@contextmanager
def lab() -> Iterator[tuple[str, str]]:
    net = Netns()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        d, r = net.add("d"), net.add("r")
        net.veth("d", "veth0", "r", "eth0")
        net.addr("d", "veth0", "192.168.201.1/24")
        for a in (10, 11, 12, 13, 20):
            net.addr("r", "eth0", f"192.168.201.{a}/24")
        srv = subprocess.Popen(
            ["ip", "netns", "exec", r, sys.executable, str(ORACLE / "lab_servers.py"), str(ORACLE)],
            stdout=subprocess.PIPE,
        )
        procs.append(srv)
        assert srv.stdout is not None
        if srv.stdout.readline().strip() != b"lab ready":
            raise RuntimeError("lab servers did not start")
        yield d, r
    finally:
        for p in procs:
            p.kill()
            p.wait()
        net.close()


LATE_LISTENER = """
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.168.201.13", 80)); s.listen(16); s.settimeout(0.2)
end = time.time() + 60
while time.time() < end:
    try:
        c, _ = s.accept(); c.close()
    except OSError:
        pass
"""


def run_two_phases(
    confs: list[Path], first: float = 7.0, second: float = 14.0
) -> dict[Path, tuple[str, str]]:
    """Run each of `confs` through pylvs (side by side, one process each) in one lab; once all have
    printed their first dump, 192.168.201.13:80 starts listening. Returns each file's two dumps."""
    with lab() as (d, r):
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
        runs = {
            conf: subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    d,
                    sys.executable,
                    "-m",
                    "pylvs.health",
                    "run",
                    str(conf),
                    "--dump-at",
                    f"{first},{second}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
                text=True,
            )
            for conf in confs
        }
        dumps: dict[Path, list[list[str]]] = {conf: [] for conf in confs}
        firsts = threading.Barrier(len(confs) + 1)
        late: list[subprocess.Popen[bytes]] = []

        def read(conf: Path, proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            ended = 0
            for line in proc.stdout:
                if line.startswith("== dump"):
                    dumps[conf].append([])
                elif line.startswith("== end"):
                    ended += 1
                    if ended == 1:
                        firsts.wait(timeout=60)
                elif dumps[conf]:
                    dumps[conf][-1].append(line)
            if ended == 0:
                firsts.abort()

        readers = [threading.Thread(target=read, args=(c, p)) for c, p in runs.items()]
        try:
            for t in readers:
                t.start()
            firsts.wait(timeout=60)
            late.append(subprocess.Popen(["ip", "netns", "exec", r, sys.executable, "-c", LATE_LISTENER]))
            for t in readers:
                t.join(timeout=60)
        finally:
            for proc in runs.values():
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
            for p in late:
                p.kill()
                p.wait()
        out = {}
        for conf, got in dumps.items():
            if len(got) != 2:
                raise RuntimeError(f"pylvs.health run {conf.name} printed {len(got)} dumps, not 2")
            out[conf] = ("".join(got[0]), "".join(got[1]))
        return out
