"""Checker kinds, one module each, registered here by their keepalived keyword."""

from __future__ import annotations

from pylvs.health.checkers.base import Checker, CheckResult, Target
from pylvs.health.checkers.dns import DnsCheck
from pylvs.health.checkers.http import HttpGet, SslGet
from pylvs.health.checkers.misc import MiscCheck
from pylvs.health.checkers.tcp import TcpCheck

CHECKERS: dict[str, type[Checker]] = {c.kind: c for c in (TcpCheck, HttpGet, SslGet, MiscCheck, DnsCheck)}

__all__ = ["CHECKERS", "CheckResult", "Checker", "Target"]
