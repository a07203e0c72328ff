"""DaemonBackend: the ipvsadm Backend protocol over pylvsd's API (synchronous, stdlib only, AF_UNIX).

A refusal comes back as the same IPVSError (op, errno, message) the core raised inside the daemon, so
pylvsadm prints exactly what ipvsadm would. DaemonUnavailable means the socket cannot be reached.

`transaction()` is for `pylvsadm -R`: a Backend that records each change (and plays them on a local
copy of the daemon's rules when something reads in the middle, or on request for every call); on
`commit()` everything goes to the daemon as one batch, which pylvsd checks and applies all or nothing.
"""

from __future__ import annotations

import errno as _errno
import http.client
import json
import os
from collections.abc import Sequence
from typing import Any, Protocol

from pylvs.core.errors import IPVSError, Op
from pylvs.core.snapshot import ConnView, DaemonView, Snapshot
from pylvs.core.types import DestConfig, IPAddr, ServiceConfig, ServiceKey
from pylvs.daemon import codec
from pylvs.daemon.changes import Change, change_from_call, change_to_compact, daemon_to_json
from pylvs.daemon.recorder import RecordingBackend
from pylvs.daemon.rules import Rules
from pylvs.daemon.unixhttp import UnixHTTPConnection as _UnixHTTPConnection

DEFAULT_SOCKET = "/run/pylvs/pylvsd.sock"


def default_socket() -> str:
    return os.environ.get("PYLVS_SOCKET") or DEFAULT_SOCKET


class DaemonUnavailable(Exception):
    """pylvsd cannot be reached on its socket."""

    def __init__(self, socket_path: str, reason: str) -> None:
        self.socket_path = socket_path
        self.reason = reason
        super().__init__(f"cannot reach pylvsd on {socket_path}: {reason}")


class DaemonError(IPVSError):
    """pylvsd answered with an error that is not a kernel-style refusal (malformed request, rules file
    not written). An IPVSError too, so pylvsadm prints its message like any refusal, never a traceback."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        err = body.get("errno")
        super().__init__(Op.FLUSH, err if isinstance(err, int) else _errno.EIO, str(body.get("detail", "")))
        self.status = status
        self.body = body
        text = str(body.get("message", "")) or f"HTTP {status}"
        self.message = f"{text} ({self.detail})" if self.detail else text
        self.args = (self.message,)


class BatchRefused(IPVSError):
    """Change number `index` of a batch was refused; `line` is the tag the caller gave that change."""

    index: int
    line: int | None


def _ipvs_error(body: dict[str, Any], cls: type[IPVSError] = IPVSError) -> IPVSError | None:
    try:
        op = Op(body.get("op"))
    except ValueError:
        return None
    err = body.get("errno")
    if not isinstance(err, int):
        return None
    e = cls(op, err, str(body.get("detail", "")))
    msg = body.get("message")
    if isinstance(msg, str) and msg != e.message:  # an engine's own refusal text
        e.message = msg
        e.args = (msg,)
    return e


class DaemonBackend:
    def __init__(
        self, socket_path: str | None = None, source: str = "pylvsadm", timeout: float = 300.0
    ) -> None:
        self.socket_path = socket_path or default_socket()
        self.source = source
        self.timeout = timeout

    # -- transport -----------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One API call; the decoded JSON answer. Raises IPVSError, DaemonError or DaemonUnavailable."""
        conn = _UnixHTTPConnection(self.socket_path, self.timeout)
        headers = {"X-Pylvs-Source": self.source, "Host": "pylvsd"}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        try:
            try:
                conn.request(method, path, body=data, headers=headers)
            except (FileNotFoundError, ConnectionRefusedError, PermissionError) as e:
                raise DaemonUnavailable(self.socket_path, e.strerror or str(e)) from None
            except OSError as e:
                raise DaemonUnavailable(self.socket_path, str(e)) from None
            try:
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as e:
                raise DaemonUnavailable(self.socket_path, f"connection lost: {e}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {"message": raw[:200].decode("utf-8", "replace")}
        if resp.status < 400:
            return answer
        if not isinstance(answer, dict):
            answer = {"message": str(answer)}
        if "index" in answer:
            err = _ipvs_error(answer, BatchRefused)
            if isinstance(err, BatchRefused):
                err.index = int(answer["index"])
                err.line = None
                raise err
        err = _ipvs_error(answer)
        if err is not None:
            raise err
        raise DaemonError(resp.status, answer)

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/status")
        return result

    # -- Backend protocol ----------------------------------------------------------------------
    def _svc_path(self, key: ServiceKey) -> str:
        return "/services/" + codec.quote_id(codec.service_id(key))

    def add_service(self, key: ServiceKey, cfg: ServiceConfig) -> None:
        body = {"service": codec.key_to_json(key), "config": codec.service_config_to_json(cfg)}
        self.request("POST", "/services", body)

    def edit_service(self, key: ServiceKey, cfg: ServiceConfig) -> None:
        self.request("PUT", self._svc_path(key), {"config": codec.service_config_to_json(cfg)})

    def del_service(self, key: ServiceKey) -> None:
        self.request("DELETE", self._svc_path(key))

    def flush(self) -> None:
        self.request("POST", "/flush")

    def add_dest(self, key: ServiceKey, cfg: DestConfig) -> None:
        self.request("POST", self._svc_path(key) + "/dests", codec.dest_config_to_json(cfg))

    def edit_dest(self, key: ServiceKey, cfg: DestConfig) -> None:
        did = codec.quote_id(codec.hostport(cfg.addr, cfg.port))
        self.request("PUT", f"{self._svc_path(key)}/dests/{did}", codec.dest_config_to_json(cfg))

    def del_dest(self, key: ServiceKey, addr: IPAddr, port: int) -> None:
        did = codec.quote_id(codec.hostport(addr, port))
        self.request("DELETE", f"{self._svc_path(key)}/dests/{did}")

    def zero(self, key: ServiceKey | None) -> None:
        self.request("POST", "/zero", {"service": None if key is None else codec.key_to_json(key)})

    def set_timeouts(self, tcp: int, tcpfin: int, udp: int) -> None:
        self.request("PUT", "/timeouts", {"tcp": tcp, "tcpfin": tcpfin, "udp": udp})

    def start_daemon(self, daemon: DaemonView) -> None:
        self.request("POST", "/daemons", daemon_to_json(daemon))

    def stop_daemon(self, state: str, syncid: int) -> None:
        if state not in ("master", "backup"):
            raise IPVSError(Op.STOP_DAEMON, _errno.EINVAL, f"bad state {state!r}")
        self.request("DELETE", f"/daemons/{state}?syncid={int(syncid)}")

    def snapshot(self) -> Snapshot:
        return codec.snapshot_from_compact(self.request("GET", "/snapshot?compact=1"))

    def connections(self) -> list[ConnView]:
        data = self.request("GET", "/connections")
        return [ConnView(**c) for c in data.get("connections", [])]

    # -- batches ---------------------------------------------------------------------------------
    def apply_changes(self, changes: list[Change], lines: list[int | None] | None = None) -> None:
        """Send `changes` as one transaction; BatchRefused (with .index and .line) if one is refused."""
        body = {"changes": [change_to_compact(c) for c in changes], "source": self.source}
        try:
            self.request("POST", "/batch", body)
        except BatchRefused as e:
            if lines is not None and 0 <= e.index < len(lines):
                e.line = lines[e.index]
            raise

    def apply_batch(self, ops: Sequence[Any]) -> None:
        """The Backend protocol's batch (ipvsadm's BatchOp list); BatchError names the refused one."""
        from pylvs.ipvsadm.backend import BatchError

        changes = [change_from_call(op.method, tuple(op.args)) for op in ops]
        try:
            self.apply_changes(changes)
        except BatchRefused as e:
            raise BatchError(e.index, e) from None

    def transaction(self, check_locally: bool | None = None) -> Transaction:
        return Transaction(self, check_locally)


class TransactionTarget(Protocol):
    """Where a Transaction reads the rules and sends its batch: pylvsd's client, or inside pylvsd
    the live rules themselves (pylvs.daemon.adm.LiveBackend)."""

    def snapshot(self) -> Snapshot: ...

    def connections(self) -> list[ConnView]: ...

    def apply_changes(self, changes: list[Change], lines: list[int | None] | None = None) -> None: ...


class Transaction(RecordingBackend):
    """A Backend that collects changes for one batch (see the module docstring).

    Set `line` before each call so that a refusal can name the input line. Three ways to check:

    * check_locally=None (default): calls are recorded only; the daemon checks the whole batch at
      commit() and a refusal comes back as BatchRefused naming the change and its line. A read
      (snapshot()) in the middle plays the changes so far on a copy of the daemon's rules, and from
      then on each call is applied to that copy too, so reads always see the transaction's changes.
    * check_locally=True: every call is applied at once to a copy of the daemon's rules and raises
      IPVSError right there, as the kernel would (costs a second pass of the core's checks).
    * check_locally=False: recorded only; reads see the daemon's rules as they were.
    """

    def __init__(self, daemon: TransactionTarget, check_locally: bool | None = None) -> None:
        self.daemon = daemon
        self.check_locally = check_locally
        self._base: Snapshot | None = None
        self._playing = bool(check_locally)  # changes are being applied to self.rules
        self._pending: BatchRefused | None = None  # a refusal met while catching up, for commit()
        rules = Rules.from_snapshot(self._base_snapshot()) if check_locally else Rules()
        super().__init__(rules)
        self.line: int | None = None
        self.lines: list[int | None] = []

    def _base_snapshot(self) -> Snapshot:
        if self._base is None:
            self._base = self.daemon.snapshot()
        return self._base

    def _do(self, change: Change) -> None:
        if self._playing and self._pending is None:
            try:
                change.apply(self.rules)
            except IPVSError as e:
                if self.check_locally:
                    raise
                self._pending = _refused(e, len(self.changes), self.line)
        self.changes.append(change)
        self.lines.append(self.line)

    def _catch_up(self) -> None:
        """Start playing: the changes recorded so far, on a copy of the daemon's rules."""
        self._playing = True
        self.rules = Rules.from_snapshot(self._base_snapshot())
        for i, c in enumerate(self.changes):
            try:
                c.apply(self.rules)
            except IPVSError as e:
                self._pending = _refused(e, i, self.lines[i])
                return

    def snapshot(self) -> Snapshot:
        if self.check_locally is False:
            return self._base_snapshot()
        if not self._playing:
            self._catch_up()
        return self.rules.snapshot()

    def connections(self) -> list[ConnView]:
        return self.daemon.connections()

    def commit(self) -> int:
        """Send the recorded changes as one batch; returns how many were applied."""
        if self._pending is not None:
            raise self._pending
        if self.changes:
            self.daemon.apply_changes(self.changes, self.lines)
        n = len(self.changes)
        self.changes = []
        self.lines = []
        return n

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()


def _refused(e: IPVSError, index: int, line: int | None) -> BatchRefused:
    r = BatchRefused(e.op, e.errno, e.detail)
    r.message = e.message
    r.args = e.args
    r.index = index
    r.line = line
    return r
