"""Replay an oracle transcript (tests/data/oracle/ipvsadm/out/*.out) through pylvsadm's code path.

A transcript is what guest/transcript.sh printed in the oracle VM: `$ cmd`, stdout, `stderr: ...`
lines, `[exit N]`. The shell lines it uses are few and are interpreted here:
`ipvsadm ARGS [< FILE]`, `/usr/sbin/ipvsadm ARGS`, `ipvsadm ARGS > /tmp/X; cat /tmp/X`,
`ipvsadm-save ARGS`, `ipvsadm-restore < FILE`, `echo 'LINE' >> /etc/hosts`, `ip link add NAME ...`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from pylvs.cli.pylvsadm import restore_result, save_result
from pylvs.core.director import Director
from pylvs.ipvsadm.backend import LocalBackend
from pylvs.ipvsadm.names import NameResolver
from pylvs.ipvsadm.run import Result, run_ipvsadm

DATA = Path(__file__).resolve().parents[1] / "data" / "oracle" / "ipvsadm"
OUT = DATA / "out"
_EXIT = re.compile(r"\[exit (\d+)\]$")


@dataclass
class Step:
    cmd: str
    out: str
    err: str
    code: int
    section: str = ""


def parse_transcript(text: str) -> list[Step]:
    steps: list[Step] = []
    lines = text.split("\n")
    i = 0
    section = ""
    while i < len(lines):
        line = lines[i]
        if line.startswith("### "):
            section = line[4:]
        if not line.startswith("$ "):
            i += 1
            continue
        cmd = line[2:]
        out: list[str] = []
        err: list[str] = []
        i += 1
        code = -1
        while i < len(lines):
            cur = lines[i]
            m = _EXIT.search(cur)
            if m and (m.start() == 0 or not cur.startswith("stderr: ")):
                if m.start() > 0:
                    out.append(cur[: m.start()])  # stdout without a final newline
                    out_text = "\n".join(out)
                else:
                    out_text = "".join(x + "\n" for x in out)
                code = int(m.group(1))
                i += 1
                break
            if cur.startswith("stderr: ") or cur == "stderr:":
                err.append(cur[8:])
            else:
                out.append(cur)
            i += 1
        steps.append(Step(cmd, out_text, "".join(x + "\n" for x in err), code, section))
    return steps


@dataclass
class Replayer:
    hosts: str = field(default_factory=lambda: (OUT / "hosts.orig").read_text())
    services: str = field(default_factory=lambda: (OUT / "services").read_text())
    interfaces: set[str] = field(default_factory=lambda: {"lo"})
    tmp_files: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.director = Director()
        self.backend = LocalBackend(self.director, lambda: 0.0, lambda: set(self.interfaces))

    def names(self) -> NameResolver:
        return NameResolver(hosts_text=self.hosts, services_text=self.services)

    def _read(self, path: str) -> str:
        if path in self.tmp_files:
            return self.tmp_files[path]
        if path == "/dev/null":
            return ""
        return (DATA / path).read_text()

    def run(self, cmd: str) -> Result | None:
        """The result of one transcript command, or None for a set-up line that prints nothing."""
        if cmd.startswith("echo ") and cmd.endswith(">> /etc/hosts"):
            self.hosts += shlex.split(cmd[: -len(">> /etc/hosts")])[1] + "\n"
            return None
        if cmd.startswith("ip link add"):
            for part in cmd.split(";"):
                words = part.split()
                if words[:3] == ["ip", "link", "add"]:
                    self.interfaces.add(words[3])
            return None
        capture: str | None = None
        if "; cat " in cmd:
            cmd, _, _ = cmd.partition("; cat ")
            cmd, _, target = cmd.partition(" > ")
            capture = target.strip()
        words = shlex.split(cmd)
        stdin: str | None = None
        if "<" in words:
            i = words.index("<")
            stdin = self._read(words[i + 1])
            words = words[:i] + words[i + 2 :]
        prog, args = words[0], words[1:]
        names = self.names()
        if prog == "ipvsadm-save":
            result = save_result(self.backend, args, "ipvsadm-save", names)
            result = Result(result.out, result.err.replace("pylvsadm", "ipvsadm"), result.code)
        elif prog == "ipvsadm-restore":
            result = restore_result(self.backend, stdin or "", "ipvsadm", names)
        else:
            result = run_ipvsadm(self.backend, args, prog=prog, stdin=stdin, names=names)
        if capture is not None:
            self.tmp_files[capture] = result.out
        return result


def load(name: str) -> list[Step]:
    return parse_transcript((OUT / f"{name}.out").read_text())
