"""The one typed error of the core: an errno as the kernel returns it, and the text ipvsadm prints."""

from __future__ import annotations

import errno as _errno
import os
from enum import Enum


class Op(Enum):
    """Operations, because ipvsadm words the same errno differently per operation (spec §B6)."""

    ADD_SERVICE = "add-service"
    EDIT_SERVICE = "edit-service"
    DEL_SERVICE = "delete-service"
    ZERO = "zero"
    GET_SERVICE = "get-service"
    ADD_DEST = "add-server"
    EDIT_DEST = "edit-server"
    DEL_DEST = "delete-server"
    SET_TIMEOUT = "set"
    START_DAEMON = "start-daemon"
    STOP_DAEMON = "stop-daemon"
    FLUSH = "flush"


_SPECIFIC: dict[tuple[Op, int], str] = {
    (Op.ADD_SERVICE, _errno.EEXIST): "Service already exists",
    (Op.ADD_SERVICE, _errno.ENOENT): "Scheduler or persistence engine not found",
    (Op.EDIT_SERVICE, _errno.ENOENT): "Scheduler or persistence engine not found",
    (Op.EDIT_SERVICE, _errno.ESRCH): "No such service",
    (Op.DEL_SERVICE, _errno.ESRCH): "No such service",
    (Op.ZERO, _errno.ESRCH): "No such service",
    (Op.GET_SERVICE, _errno.ESRCH): "No such service",
    (Op.ADD_DEST, _errno.ESRCH): "Service not defined",
    (Op.EDIT_DEST, _errno.ESRCH): "Service not defined",
    (Op.DEL_DEST, _errno.ESRCH): "Service not defined",
    (Op.ADD_DEST, _errno.EEXIST): "Destination already exists",
    (Op.EDIT_DEST, _errno.ENOENT): "No such destination",
    (Op.DEL_DEST, _errno.ENOENT): "No such destination",
    (Op.START_DAEMON, _errno.EEXIST): "Daemon has already run",
    (Op.STOP_DAEMON, _errno.ESRCH): "No daemon is running",
}

_GENERIC: dict[int, str] = {
    _errno.EPERM: "Permission denied (you must be root)",
    _errno.EINVAL: "Invalid operation.  Possibly wrong module version, address not unicast, ...",
    _errno.ENOPROTOOPT: "Protocol not available",
    _errno.ENOMEM: "Memory allocation problem",
    _errno.EOPNOTSUPP: "Operation not supported with IPv6",
    _errno.EAFNOSUPPORT: "Operation not supported with specified address family",
    _errno.EMSGSIZE: "Module is wrong version",
}


def ipvs_strerror(op: Op, err: int) -> str:
    """The message ipvsadm prints when the kernel refuses `op` with `err`."""
    specific = _SPECIFIC.get((op, err))
    if specific is not None:
        return specific
    generic = _GENERIC.get(err)
    if generic is not None:
        return generic
    return os.strerror(err)


class IPVSError(Exception):
    """The kernel refused an operation: carries the errno and ipvsadm's message for it."""

    def __init__(self, op: Op, err: int, detail: str = "") -> None:
        self.op = op
        self.errno = err
        self.detail = detail  # why, for logs; never printed by ipvsadm
        self.message = ipvs_strerror(op, err)
        super().__init__(self.message)
