"""pylvsadm, pylvsadm-save, pylvsadm-restore: ipvsadm's commands over pylvsd.

pylvsd plays the kernel's part: it is found through $PYLVS_SOCKET (default /run/pylvs/pylvsd.sock).
When it cannot be reached, pylvsadm prints one line naming the socket and exits 2, as ipvsadm does
when it cannot initialise IPVS.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from pylvs.ipvsadm.run import Result, restore, run_ipvsadm

if TYPE_CHECKING:
    from pylvs.ipvsadm.backend import Backend

DEFAULT_SOCKET = "/run/pylvs/pylvsd.sock"
INIT_FAILURE_EXIT = 2


def socket_path() -> str:
    return os.environ.get("PYLVS_SOCKET") or DEFAULT_SOCKET


def unavailable_message(path: str, reason: str) -> str:
    """The one-line error when pylvsd cannot be reached (stable text: scripts may match it)."""
    return f"Can't initialize ipvs: pylvsd is not running on {path} ({reason})\n"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _backend() -> Backend:
    from pylvs.daemon.client import DaemonBackend  # lazy: the tests use other backends

    return DaemonBackend(socket_path())  # type: ignore[no-any-return]


def _emit(result: Result) -> int:
    if result.out:
        sys.stdout.write(result.out)
        sys.stdout.flush()
    if result.err:
        sys.stderr.write(result.err)
        sys.stderr.flush()
    return result.code


def _run(call: object) -> int:
    """Run `call(backend) -> Result`, turning an unreachable daemon into the init failure."""
    try:
        from pylvs.daemon.client import DaemonUnavailable
    except ImportError:  # the daemon client is not installed: nothing to talk to
        sys.stderr.write(unavailable_message(socket_path(), "no daemon client"))
        return INIT_FAILURE_EXIT
    try:
        backend = _backend()
        assert callable(call)
        result = call(backend)
    except DaemonUnavailable as e:
        sys.stderr.write(unavailable_message(socket_path(), _reason(e)))
        return INIT_FAILURE_EXIT
    except KeyboardInterrupt:
        return 130
    assert isinstance(result, Result)
    return _emit(result)


def _read_stdin() -> str:
    try:
        return sys.stdin.read()
    except (OSError, UnicodeDecodeError, ValueError):
        return ""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    prog = sys.argv[0] if argv is None and sys.argv and sys.argv[0] else "pylvsadm"
    needs_stdin = bool(args) and (args[0] in ("-R", "--restore") or args[0].startswith("-R"))

    def call(backend: Backend) -> Result:
        stdin = _read_stdin() if needs_stdin else None
        return run_ipvsadm(backend, args, prog=prog, stdin=stdin)

    return _run(call)


SAVE_HELP = (
    "{name}: Script to save the IPVS table to stdout.\n"
    "   With the -n option, prints out the table in numeric format.\n"
)


def save_main(argv: list[str] | None = None) -> int:
    """pylvsadm-save [-n]: like ipvsadm-save (any other option: help on stderr, exit 1)."""
    args = sys.argv[1:] if argv is None else argv
    name = os.path.basename(sys.argv[0]) if argv is None and sys.argv and sys.argv[0] else "pylvsadm-save"
    numeric = False
    for a in args:
        if a == "-n":
            numeric = True
        elif a.startswith("-"):
            sys.stderr.write(SAVE_HELP.format(name=name))
            return 1

    def call(backend: Backend) -> Result:
        return run_ipvsadm(backend, ["-S", "-n"] if numeric else ["-S"], prog="pylvsadm")

    return _run(call)


def strip_comment_lines(text: str) -> str:
    """ipvsadm-restore drops the lines that begin with '#' (only those)."""
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))


def restore_main(argv: list[str] | None = None) -> int:
    """pylvsadm-restore: clear the table and restore stdin without its '#' lines, in one transaction."""

    def call(backend: Backend) -> Result:
        return restore(backend, strip_comment_lines(_read_stdin()), "pylvsadm", flush_first=True)

    return _run(call)


if __name__ == "__main__":
    sys.exit(main())
