"""Run one ipvsadm command line against a Backend and return what ipvsadm would print.

`-R` differs from ipvsadm on purpose: the whole input is one transaction. Every line is checked
(parsed, then played on a throw-away copy of the rules); if one fails, its ipvsadm message is
printed with a second line naming the line number, the exit code is the one ipvsadm would have
used for that line, and the rule set is left exactly as it was. ipvsadm instead applies the lines
before the bad one (and after a kernel error goes on with the rest).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from pylvs.core.errors import IPVSError
from pylvs.core.snapshot import ServiceView, Snapshot
from pylvs.ipvsadm import listing
from pylvs.ipvsadm.backend import (
    Backend,
    BatchError,
    BatchOp,
    LocalBackend,
    apply_op,
    director_from_snapshot,
)
from pylvs.ipvsadm.grammar import Command, Format, UsageError, fast_rule, parse, parse_fast, tryhelp_text
from pylvs.ipvsadm.names import NameResolver
from pylvs.ipvsadm.save import format_save
from pylvs.ipvsadm.usage import usage_text, version_text

RULE_WORD_MAX = 4096


@dataclass(frozen=True, slots=True)
class Result:
    out: str
    err: str
    code: int


def _find_service(snap: Snapshot, cmd: Command) -> ServiceView | None:
    for se in snap.services:
        if se.key() == cmd.key:
            return se
    return None


def command_op(cmd: Command) -> BatchOp | None:
    """The Backend call a rule-changing command makes (None for the other commands)."""
    c = cmd.cmd
    if c == "add-service":
        return BatchOp("add_service", (cmd.key, cmd.service))
    if c == "edit-service":
        return BatchOp("edit_service", (cmd.key, cmd.service))
    if c == "delete-service":
        return BatchOp("del_service", (cmd.key,))
    if c == "flush":
        return BatchOp("flush")
    if c == "zero":
        return BatchOp("zero", (cmd.key,))
    if c == "add-server":
        return BatchOp("add_dest", (cmd.key, cmd.dest))
    if c == "edit-server":
        return BatchOp("edit_dest", (cmd.key, cmd.dest))
    if c == "delete-server":
        assert cmd.dest is not None
        return BatchOp("del_dest", (cmd.key, cmd.dest.addr, cmd.dest.port))
    if c == "set":
        return BatchOp("set_timeouts", cmd.timeouts)
    if c == "start-daemon":
        return BatchOp("start_daemon", (cmd.daemon,))
    if c == "stop-daemon":
        assert cmd.daemon is not None
        return BatchOp("stop_daemon", (cmd.daemon.state, cmd.daemon.syncid))
    return None


def _show(backend: Backend, cmd: Command, names: NameResolver) -> Result:
    """The commands that only read: -L in all its forms, -S."""
    if cmd.cmd == "save":
        return Result(format_save(backend.snapshot(), cmd.fmt.numeric, names), "", 0)
    opts = cmd.options
    if "connection" in opts:
        text = listing.list_connections(
            backend.connections(), cmd.fmt.numeric, cmd.fmt.persistent_conn, names
        )
        return Result(text, "", 0)
    fmt = cmd.fmt
    if (
        fmt.numeric
        and not (fmt.stats or fmt.rate or fmt.thresholds or fmt.persistent_conn or fmt.tun_info)
        and not opts & {"service-address", "timeout", "daemon"}
    ):
        # the plain numeric table: a backend holding the live rules may write it without views
        plain = getattr(backend, "list_plain", None)
        listed: str | None = plain(fmt.nosort) if plain is not None else None
        if listed is not None:
            return Result(listed, "", 0)
    snap = backend.snapshot()
    if "service-address" in opts:
        se = _find_service(snap, cmd)
        if se is None:
            return Result("", "No such service\n", 1)
        return Result(listing.list_service(se, cmd.fmt, names), "", 0)
    if "timeout" in opts:
        return Result(listing.list_timeout(snap), "", 0)
    if "daemon" in opts:
        return Result(listing.list_daemons(snap), "", 0)
    return Result(listing.list_all(snap, cmd.fmt, names), "", 0)


def run_ipvsadm(
    backend: Backend,
    argv: list[str],
    prog: str = "ipvsadm",
    stdin: str | None = None,
    *,
    names: NameResolver | None = None,
) -> Result:
    """What `prog argv...` prints (stdout, stderr) and its exit code. argv excludes the program."""
    names = names or NameResolver()
    if not argv:
        return Result(listing.list_all(backend.snapshot(), Format(), names), "", 0)
    try:
        cmd = parse([prog, *argv], names)
    except UsageError as e:
        return Result("", e.message + "\n", e.exit_code)
    if cmd.cmd == "help":
        return Result(usage_text(prog), "", 0)
    if cmd.cmd == "version":
        return Result(version_text(), "", 0)
    if cmd.cmd == "restore":
        return restore(backend, stdin or "", prog, names=names)
    op = command_op(cmd)
    if op is None:
        return _show(backend, cmd, names)
    try:
        apply_op(backend, op)
    except IPVSError as e:
        return Result("", e.message + "\n", 255)
    return Result("", "", 0)


# -- restore ----------------------------------------------------------------------------------


_WORD = re.compile(rf"[^ \t\r]{{1,{RULE_WORD_MAX}}}")


def split_rules(text: str) -> list[tuple[int, list[str]]]:
    """ipvsadm's config_stream_read(): (line number, words) of each line with words.

    Words are split on spaces, tabs and carriage returns, cut into pieces of 4096 characters; the
    word `ipvsadm` is dropped anywhere. As in ipvsadm, a last line without a newline that ends in
    two or more white-space characters is lost (its reader hits the end of input while skipping).
    """
    lines: list[tuple[int, list[str]]] = []
    segments = text.split("\n")
    last = segments[-1]
    if last and len(last) - len(last.rstrip(" \t\r")) >= 2:
        segments.pop()
    for lineno, segment in enumerate(segments, 1):
        if len(segment) <= RULE_WORD_MAX and "\t" not in segment and "\r" not in segment:
            # no word can need cutting and spaces are the only separators: a plain split
            words = segment.split(" ")
            if "" in words or "ipvsadm" in words:
                words = [w for w in words if w and w != "ipvsadm"]
        else:
            words = [w for w in _WORD.findall(segment) if w != "ipvsadm"]
        if words:
            lines.append((lineno, words))
    return lines


def _restore_batch_only(
    backend: Backend, text: str, prog: str, names: NameResolver, flush_first: bool
) -> Result | None:
    """A restore made only of rule changes: parse it all, then one apply_batch (which checks).

    None when a line needs the state as it is half-way (a listing, -h): restore() then plays the
    lines one by one on a copy.
    """
    ops: list[BatchOp] = [BatchOp("flush")] if flush_first else []
    op_lines: list[int] = [0] if flush_first else []
    for lineno, words in split_rules(text):
        try:
            cmd = parse_fast(words) or parse([prog, *words], names)
        except UsageError:
            return None  # an earlier line may fail first: let the line-by-line path say which
        op = command_op(cmd)
        if op is None:
            return None
        ops.append(op)
        op_lines.append(lineno)
    if ops:
        try:
            backend.apply_batch(ops)
        except BatchError as e:
            line = op_lines[e.index] if 0 <= e.index < len(op_lines) else 0
            return _rejected(prog, e.message, line, 255)
    return Result("", "", 0)


def _rejected(prog: str, message: str, lineno: int, code: int) -> Result:
    note = f"{prog}: restore rejected at line {lineno}; no rule was changed\n"
    return Result("", message + "\n" + note, code)


def _scratch_for(backend: Backend, snap: Snapshot) -> LocalBackend:
    interfaces = backend.interfaces if isinstance(backend, LocalBackend) else None
    scratch = LocalBackend(director_from_snapshot(snap), time.monotonic, interfaces)
    scratch.daemons = list(snap.daemons)
    return scratch


def restore(
    backend: Backend,
    text: str,
    prog: str = "ipvsadm",
    *,
    names: NameResolver | None = None,
    flush_first: bool = False,
) -> Result:
    """`-R`: check every line on a copy of the rules, then apply them all as one batch.

    A backend with a `transaction()` method (pylvsd's client) supplies its own checking copy and
    commit; any other backend is checked on a throw-away LocalBackend and gets `apply_batch`.
    """
    names = names or NameResolver()
    make_txn = getattr(backend, "transaction", None)
    if not callable(make_txn):
        fast = _restore_batch_only(backend, text, prog, names, flush_first)
        if fast is not None:
            return fast
    target: Any
    if callable(make_txn):
        target = make_txn()
    else:
        target = _scratch_for(backend, backend.snapshot())
    ops: list[BatchOp] = []
    op_lines: list[int] = []

    def play(op: BatchOp, lineno: int) -> None:
        if hasattr(target, "line"):
            target.line = lineno
        apply_op(target, op)
        ops.append(op)
        op_lines.append(lineno)

    # A transaction checks and records each call itself: the two line shapes -S writes go straight
    # to it (a 100,000-line restore is mostly those), without a BatchOp per line.
    direct = callable(make_txn)
    tags_lines = hasattr(target, "line")
    out: list[str] = []
    try:
        if flush_first:
            play(BatchOp("flush"), 0)
        for lineno, words in split_rules(text):
            if direct:
                rule = fast_rule(words)
                if rule is not None:
                    if tags_lines:
                        target.line = lineno
                    try:
                        if rule[2] is not None:
                            target.add_dest(rule[0], rule[2])
                        else:
                            target.add_service(rule[0], rule[1])
                    except IPVSError as e:
                        return _rejected(prog, e.message, lineno, 255)
                    continue
            try:
                cmd = parse_fast(words) or parse([prog, *words], names)
            except UsageError as e:
                return _rejected(prog, e.message, lineno, e.exit_code)
            if cmd.cmd == "restore":
                return _rejected(prog, tryhelp_text(prog), lineno, 255)
            if cmd.cmd in ("help", "version"):
                # ipvsadm prints and exits there: the lines before are kept, the rest is not read.
                out.append(usage_text(prog) if cmd.cmd == "help" else version_text())
                break
            op = command_op(cmd)
            if op is None:
                shown = _show(target, cmd, names)
                if shown.code:
                    return _rejected(prog, shown.err.rstrip("\n"), lineno, shown.code)
                out.append(shown.out)
                continue
            try:
                play(op, lineno)
            except IPVSError as e:
                return _rejected(prog, e.message, lineno, 255)
    except UnicodeError:
        return _rejected(prog, "unreadable input", 0, 255)
    try:
        if callable(make_txn):
            target.commit()
        elif ops:
            backend.apply_batch(ops)
    except BatchError as e:
        # (op_lines lists only the lines that made a BatchOp: with `direct`, not every line)
        line = op_lines[e.index] if not direct and 0 <= e.index < len(op_lines) else 0
        return _rejected(prog, e.message, line, 255)
    except IPVSError as e:
        line = getattr(e, "line", None) or 0
        return _rejected(prog, e.message, line, 255)
    return Result("".join(out), "", 0)
