"""Turning a statement's words into values, or refusing them with the file, line and reason."""

from __future__ import annotations

import ipaddress
import math

from pylvs.core.types import IPAddr
from pylvs.health.config.errors import ConfigError
from pylvs.health.config.lexer import Stmt

_TRUE = {"on", "true", "yes"}
_FALSE = {"off", "false", "no"}


def need(stmt: Stmt, n: int, what: str) -> None:
    if len(stmt.args) < n:
        raise ConfigError(stmt.where, f"'{stmt.keyword}' needs {what}")


def arg_int(stmt: Stmt, i: int = 0, lo: int = 0, hi: int = 2**31 - 1) -> int:
    need(stmt, i + 1, "a number")
    text = stmt.args[i]
    try:
        v = int(text, 0) if text.lower().startswith("0x") else int(text)
    except ValueError:
        raise ConfigError(stmt.where, f"'{stmt.keyword}': '{text}' is not a whole number") from None
    if not lo <= v <= hi:
        raise ConfigError(stmt.where, f"'{stmt.keyword}': {v} is out of range [{lo}, {hi}]")
    return v


def arg_timer(stmt: Stmt, i: int = 0, lo: float = 0.0, hi: float = 1e6) -> float:
    """A <TIMER>: seconds, fractions allowed."""
    need(stmt, i + 1, "a time in seconds")
    text = stmt.args[i]
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(stmt.where, f"'{stmt.keyword}': '{text}' is not a time in seconds") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise ConfigError(stmt.where, f"'{stmt.keyword}': {text} is out of range [{lo:g}, {hi:g}]")
    return v


def arg_bool(stmt: Stmt, i: int = 0) -> bool:
    """An optional <BOOL>: the keyword alone means true."""
    if len(stmt.args) <= i:
        return True
    text = stmt.args[i].lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(
        stmt.where, f"'{stmt.keyword}': '{stmt.args[i]}' is not one of on|off|true|false|yes|no"
    )


def parse_addr(stmt: Stmt, text: str) -> IPAddr:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise ConfigError(stmt.where, f"'{text}' is not an IP address") from None


def parse_port(stmt: Stmt, text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise ConfigError(stmt.where, f"'{text}' is not a port number") from None
    if not 0 <= v <= 65535:
        raise ConfigError(stmt.where, f"port {v} is out of range [0, 65535]")
    return v


def arg_str(stmt: Stmt, i: int = 0) -> str:
    need(stmt, i + 1, "a value")
    return stmt.args[i]


def arg_cmd(stmt: Stmt) -> str:
    """A script: everything after the keyword (the first word is the command line, quoted or not)."""
    need(stmt, 1, "a script path")
    return stmt.args[0]
