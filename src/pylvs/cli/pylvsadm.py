"""pylvsadm, pylvsadm-save, pylvsadm-restore: ipvsadm's commands over pylvsd.

pylvsd plays the kernel's part: it is found through $PYLVS_SOCKET (default /run/pylvs/pylvsd.sock).
When it cannot be reached, pylvsadm prints one line naming the socket and exits 2, as ipvsadm does
when it cannot initialise IPVS.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO, cast

if TYPE_CHECKING:
    from pylvs.ipvsadm.backend import Backend
    from pylvs.ipvsadm.names import NameResolver
    from pylvs.ipvsadm.run import Result

DEFAULT_SOCKET = "/run/pylvs/pylvsd.sock"
INIT_FAILURE_EXIT = 2


def socket_path() -> str:
    return os.environ.get("PYLVS_SOCKET") or DEFAULT_SOCKET


def unavailable_message(path: str, reason: str) -> str:
    """The one-line error when pylvsd cannot be reached (stable text: scripts may match it)."""
    return f"Can't initialize ipvs: pylvsd is not running on {path} ({reason})\n"


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    text = (reason if isinstance(reason, str) and reason else str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _backend() -> Backend:
    from pylvs.daemon.client import DaemonBackend  # lazy: the tests use other backends

    # pylvsd's client batches through transaction() instead of apply_batch (run.restore uses either).
    return cast("Backend", DaemonBackend(socket_path()))


def _write(stream: TextIO, text: str) -> None:
    """Write as C would: the bytes of the arguments as given (undecodable ones included)."""
    stream.flush()
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        stream.write(text)
    else:
        buffer.write(text.encode("utf-8", "surrogateescape"))
        buffer.flush()


# -- the short way: pylvsd runs the command line (POST /ipvsadm) -------------------------------------
# Only json and http.client are loaded for it, so a command costs one round trip and no parsing or
# formatting here. When nobody listens on the socket (or pylvsd is older and lacks the route), the
# long way below runs instead: it prints -h without a daemon and the init failure otherwise.


def _remote(args: list[str], prog: str, stdin: str | None, flush_first: bool = False) -> int | None:
    """Run the command in pylvsd and print its result; None when that cannot be done here."""
    import http.client

    from pylvs.daemon.unixhttp import UnixHTTPConnection

    path = socket_path()
    conn = UnixHTTPConnection(path, 300.0)
    try:
        try:
            conn.connect()
        except OSError:
            return None  # nobody there: the long way says so (or answers what needs no daemon)
        body = json.dumps({"argv": args, "prog": prog, "stdin": stdin, "flush_first": flush_first})
        headers = {"Content-Type": "application/json", "X-Pylvs-Source": "pylvsadm", "Host": "pylvsd"}
        try:
            conn.request("POST", "/ipvsadm", body=body.encode(), headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException) as e:
            # the command may have run: never run it a second time the long way
            _write(sys.stderr, unavailable_message(path, f"connection lost: {e}"))
            return INIT_FAILURE_EXIT
    finally:
        conn.close()
    status = resp.status
    if status == 404:
        return None
    try:
        data: Any = json.loads(payload) if payload else {}
    except ValueError:
        data = {"message": payload[:200].decode("utf-8", "replace")}
    if not isinstance(data, dict):
        data = {"message": str(data)}
    if status >= 400:  # pylvsd refused the request itself (e.g. the rules file could not be saved)
        text = str(data.get("message", "")) or f"HTTP {status}"
        detail = data.get("detail")
        _write(sys.stderr, f"pylvsadm: {text} ({detail})\n" if detail else f"pylvsadm: {text}\n")
        return 255
    out, err, code = data.get("out", ""), data.get("err", ""), data.get("code", 255)
    if out:
        _write(sys.stdout, str(out))
    if err:
        _write(sys.stderr, str(err))
    return code if isinstance(code, int) else 255


def _emit(result: Result) -> int:
    if result.out:
        _write(sys.stdout, result.out)
    if result.err:
        _write(sys.stderr, result.err)
    return result.code


def _run(call: Callable[[Backend], Result]) -> int:
    """Run `call(backend) -> Result`, turning an unreachable daemon into the init failure."""
    from pylvs.ipvsadm.run import Result

    try:
        from pylvs.daemon.client import DaemonUnavailable
    except ImportError:  # the daemon client is not installed: nothing to talk to
        return _emit(Result("", unavailable_message(socket_path(), "no daemon client"), INIT_FAILURE_EXIT))
    try:
        result = call(_backend())
    except DaemonUnavailable as e:
        return _emit(Result("", unavailable_message(socket_path(), _reason(e)), INIT_FAILURE_EXIT))
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # pylvsd answered something unexpected: one line, never a traceback
        message = getattr(e, "message", None) or str(e) or type(e).__name__
        return _emit(Result("", f"pylvsadm: {message}\n", 255))
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
    stdin = _read_stdin() if needs_stdin else None
    code = _remote(args, prog, stdin)
    if code is not None:
        return code

    def call(backend: Backend) -> Result:
        from pylvs.ipvsadm.run import run_ipvsadm

        return run_ipvsadm(backend, args, prog=prog, stdin=stdin)

    return _run(call)


SAVE_HELP = (
    "{name}: Script to save the IPVS table to stdout.\n"
    "   With the -n option, prints out the table in numeric format.\n"
)


def save_result(
    backend: Backend, args: list[str], name: str = "pylvsadm-save", names: NameResolver | None = None
) -> Result:
    """What `pylvsadm-save ARGS` prints: `-S [-n]`, or its help (exit 1) for any other option."""
    from pylvs.ipvsadm.run import Result, run_ipvsadm

    numeric = False
    for a in args:
        if a == "-n":
            numeric = True
        elif a.startswith("-"):
            return Result("", SAVE_HELP.format(name=name), 1)
    return run_ipvsadm(backend, ["-S", "-n"] if numeric else ["-S"], prog="pylvsadm", names=names)


def save_main(argv: list[str] | None = None) -> int:
    """pylvsadm-save [-n]: like ipvsadm-save."""
    args = sys.argv[1:] if argv is None else argv
    name = os.path.basename(sys.argv[0]) if argv is None and sys.argv and sys.argv[0] else "pylvsadm-save"
    if any(a.startswith("-") and a != "-n" for a in args):
        _write(sys.stderr, SAVE_HELP.format(name=name))
        return 1
    code = _remote(["-S", "-n"] if "-n" in args else ["-S"], "pylvsadm", None)
    if code is not None:
        return code
    return _run(lambda backend: save_result(backend, args, name))


def strip_comment_lines(text: str) -> str:
    """ipvsadm-restore drops the lines that begin with '#' (only those); we blank them instead, so
    that line numbers in messages are those of the input."""
    return "".join("\n" if line.startswith("#") else line for line in text.splitlines(keepends=True))


def restore_result(
    backend: Backend, text: str, prog: str = "pylvsadm", names: NameResolver | None = None
) -> Result:
    """What `pylvsadm-restore` prints for `text` on stdin: -C then -R, as one transaction."""
    from pylvs.ipvsadm.run import restore

    return restore(backend, strip_comment_lines(text), prog, names=names, flush_first=True)


def restore_main(argv: list[str] | None = None) -> int:
    """pylvsadm-restore: clear the table and restore stdin without its '#' lines, in one transaction."""
    text = _read_stdin()
    code = _remote(["-R"], "pylvsadm", strip_comment_lines(text), flush_first=True)
    if code is not None:
        return code
    return _run(lambda backend: restore_result(backend, text))


if __name__ == "__main__":
    sys.exit(main())
