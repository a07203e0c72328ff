"""MISC_CHECK: run a program; exit 0 is alive, 1 is dead; with misc_dynamic, 2-255 is alive with weight code-2."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess

from pylvs.health.checkers.base import Checker, CheckResult, os_reason


class MiscCheck(Checker):
    kind = "MISC_CHECK"

    def timeout(self) -> float:
        # keepalived: misc_timeout, else the checker's delay_loop
        return self.conf.misc_timeout or self.target.delay_loop

    async def check(self) -> CheckResult:
        path = self.conf.misc_path or ""
        try:
            argv = shlex.split(path)
        except ValueError as e:
            return CheckResult(False, f"misc_path {path!r}: {e}")
        if not argv:
            return CheckResult(False, "misc_path is empty")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, so a timeout kills its children too
            )
        except OSError as e:
            return CheckResult(False, os_reason(f"cannot run {argv[0]}", e))
        t = self.timeout()
        try:
            async with asyncio.timeout(t):
                rc = await proc.wait()
        except (TimeoutError, asyncio.CancelledError) as e:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await asyncio.shield(proc.wait())
            if isinstance(e, asyncio.CancelledError):
                raise
            return CheckResult(False, f"{argv[0]} did not finish within {t:g}s; killed")
        return self.judge(argv[0], rc)

    def judge(self, prog: str, rc: int) -> CheckResult:
        if rc == 0:
            return CheckResult(True, f"{prog} exited 0")
        if rc < 0:
            return CheckResult(False, f"{prog} killed by signal {-rc}")
        if rc >= 2 and self.conf.misc_dynamic:
            return CheckResult(True, f"{prog} exited {rc}: weight {rc - 2}", weight=rc - 2)
        return CheckResult(False, f"{prog} exited {rc}")
