"""Golden tests: every command of the oracle transcripts replayed through pylvsadm's code path.

The transcripts were taken with real ipvsadm 1.31 on a real IPVS kernel (Debian 6.1) in the oracle
VM: tests/data/oracle/ipvsadm/{NAME.cmds, out/NAME.out, run-all.sh}. stdout, stderr and the exit
code must match byte for byte, with one designed exception: a `-R` whose input has an error.
ipvsadm applies the lines before it (and after a kernel error even the lines after); pylvsadm
rejects the whole input, prints ipvsadm's message for the first bad line plus one line naming it,
and changes nothing. For those, the test checks exactly that, and that the rule set is untouched
until the transcript clears the table again.
"""

from __future__ import annotations

import re

import pytest

from pylvs.ipvsadm.save import format_save

from .replay import OUT, Replayer, load

TRANSCRIPTS = sorted(p.stem for p in OUT.glob("*.out"))
REJECT_NOTE = re.compile(r"^(ipvsadm|pylvsadm): restore rejected at line \d+; no rule was changed$")


def _is_restore(cmd: str) -> bool:
    return cmd.startswith("ipvsadm-restore") or bool(re.match(r"^ipvsadm (-R|--restore)\b", cmd))


def _nosort_table(cmd: str) -> bool:
    words = cmd.split()
    return "--nosort" in words and not {"-t", "-u", "-f", "--sctp-service"} & set(words)


def _blocks(listing: str) -> tuple[list[str], list[str]]:
    """Header lines, and each service with its real servers as one sorted item."""
    lines = listing.splitlines(keepends=True)
    head, blocks = lines[:3], []
    for line in lines[3:]:
        if line.startswith("  ->") and blocks:
            blocks[-1] += line
        else:
            blocks.append(line)
    return head, sorted(blocks)


def test_transcripts_present() -> None:
    assert {"help", "service", "server", "sort", "names", "daemon", "restore"} <= set(TRANSCRIPTS)


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_transcript(name: str) -> None:
    check_transcript(name, Replayer())


# The sync daemon transcript needs interfaces made with `ip link add` in the VM: pylvsd checks real ones.
IN_DAEMON = [t for t in TRANSCRIPTS if t != "daemon"]


@pytest.mark.parametrize("name", IN_DAEMON)
def test_transcript_in_daemon(name: str) -> None:
    """The same transcripts through pylvsd's side of `POST /ipvsadm` (pylvs.daemon.adm.LiveBackend:
    live rules, apply_sync, -R as the daemon's own transaction)."""
    from pylvs.daemon.adm import LiveBackend
    from pylvs.daemon.rules import Rules
    from pylvs.daemon.state import DaemonState

    replayer = Replayer()
    replayer.backend = LiveBackend(DaemonState(Rules(), clock=lambda: 0.0), "pylvsadm")  # type: ignore[assignment]
    check_transcript(name, replayer)


def check_transcript(name: str, replayer: Replayer) -> None:
    frozen: str | None = None  # the rules (-Sn) a rejected restore must have left alone
    checked = 0
    for step in load(name):
        before = format_save(replayer.backend.snapshot(), True)
        result = replayer.run(step.cmd)
        if result is None:
            continue
        where = f"{name}: $ {step.cmd}"
        rejected = bool(result.err) and bool(REJECT_NOTE.match(result.err.splitlines()[-1]))
        if _is_restore(step.cmd) and step.err and rejected:
            # ipvsadm reported an error somewhere in the input: we reject all of it.
            first = step.err.splitlines()[0]
            lines = result.err.splitlines()
            assert result.out == "", where
            assert lines[0] == first, where
            assert len(lines) == 2 and REJECT_NOTE.match(lines[1]), where
            assert result.code == (2 if step.code == 2 else 255), where
            assert format_save(replayer.backend.snapshot(), True) == before, where
            frozen = before
            checked += 1
            continue
        if frozen is not None:
            if step.cmd in ("ipvsadm -C",) or step.cmd.startswith("ipvsadm-restore"):
                frozen = None  # both sides agree again from here
            else:
                assert format_save(replayer.backend.snapshot(), True) == frozen, where
                continue
        if _nosort_table(step.cmd):
            # The kernel's hash order is not reproducible: compare the service blocks as a set.
            assert _blocks(result.out) == _blocks(step.out), where
            assert (result.err, result.code) == (step.err, step.code), where
        else:
            assert (result.out, result.err, result.code) == (step.out, step.err, step.code), where
        checked += 1
    assert checked > 0
