"""Network namespaces for labs and tests: unique names, veths created directly inside namespaces (so the
root namespace never holds a lab address or route), processes killed by group, everything removed
on close, also after errors and Ctrl-C."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence


class LabError(RuntimeError):
    pass


def is_root() -> bool:
    return os.geteuid() == 0


class Netns:
    """A set of namespaces named <prefix>-<role>, and the processes started in them."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or "plv" + secrets.token_hex(3)
        self.names: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workdir = tempfile.mkdtemp(prefix=self.prefix + "-")

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def add(self, role: str) -> str:
        name = self.ns(role)
        self.run_root(["ip", "netns", "add", name])
        self.names.append(name)
        self.sh(role, "ip link set lo up")
        return name

    # -- commands ------------------------------------------------------------------------------
    @staticmethod
    def run_root(
        cmd: Sequence[str], check: bool = True, timeout: float = 20
    ) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise LabError(f"{' '.join(cmd)}: {p.stderr.strip() or p.stdout.strip()}")
        return p

    def run(
        self,
        role: str,
        cmd: Sequence[str],
        check: bool = True,
        timeout: float = 30,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full = ["ip", "netns", "exec", self.ns(role), *cmd]
        p = subprocess.run(full, capture_output=True, text=True, timeout=timeout, env=env)
        if check and p.returncode != 0:
            raise LabError(f"[{role}] {' '.join(cmd)}: {p.stderr.strip() or p.stdout.strip()}")
        return p

    def sh(self, role: str, script: str, check: bool = True) -> str:
        out = []
        for line in script.strip().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(self.run(role, line.split(), check=check).stdout)
        return "".join(out)

    def spawn(
        self, role: str, cmd: Sequence[str], log_name: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(os.path.join(self.workdir, (log_name or role) + ".log"), "ab")
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(role), *cmd],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        log.close()
        self.procs.append(p)
        return p

    def log(self, name: str) -> str:
        try:
            with open(os.path.join(self.workdir, name + ".log")) as fh:
                return fh.read()
        except OSError:
            return ""

    def python(self) -> str:
        return sys.executable

    # -- links ---------------------------------------------------------------------------------
    def veth(self, a: str, a_if: str, b: str, b_if: str) -> None:
        self.run_root(
            [
                "ip",
                "-n",
                self.ns(a),
                "link",
                "add",
                a_if,
                "type",
                "veth",
                "peer",
                "name",
                b_if,
                "netns",
                self.ns(b),
            ]
        )
        self.sh(a, f"ip link set {a_if} up")
        self.sh(b, f"ip link set {b_if} up")

    def addr(self, role: str, ifname: str, cidr: str) -> None:
        self.sh(role, f"ip addr add {cidr} dev {ifname}")

    def sysctl(self, role: str, **kv: str | int) -> None:
        for k, v in kv.items():
            self.run(role, ["sysctl", "-q", "-w", f"{k.replace('__', '.')}={v}"])

    def wait_tcp(self, role: str, addr: str, port: int, timeout: float = 10.0) -> None:
        code = (
            "import socket,sys,time\n"
            f"end=time.time()+{timeout}\n"
            "while time.time()<end:\n"
            "  try:\n"
            f"    socket.create_connection(('{addr}',{port}),0.5).close(); sys.exit(0)\n"
            "  except OSError: time.sleep(0.05)\n"
            "sys.exit(1)\n"
        )
        if self.run(role, [self.python(), "-c", code], check=False, timeout=timeout + 5).returncode != 0:
            raise LabError(f"[{role}] nothing listens on {addr}:{port}")

    # -- teardown ------------------------------------------------------------------------------
    def stop_procs(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 3
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(2)
        self.procs.clear()

    def close(self) -> None:
        # Block Ctrl-C while tearing down so a second interrupt cannot leave namespaces behind.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
        try:
            self.stop_procs()
            for name in reversed(self.names):
                self.run_root(["ip", "netns", "pids", name], check=False)
                pids = self.run_root(["ip", "netns", "pids", name], check=False).stdout.split()
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                self.run_root(["ip", "netns", "del", name], check=False)
            self.names.clear()
            shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)

    def __enter__(self) -> Netns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
