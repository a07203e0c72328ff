"""The net.ipv4.vs.* settings that change what the core decides (spec §A11)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Sysctls:
    expire_nodest_conn: int = 0
    expire_quiescent_template: int = 0
    conn_reuse_mode: int = 1
    sloppy_tcp: int = 0
    sloppy_sctp: int = 0
    cache_bypass: int = 0
    nat_icmp_send: int = 0
    schedule_icmp: int = 0
    secure_tcp: int = 0
    run_estimation: int = 1
    lblc_expiration: int = 86400
    lblcr_expiration: int = 86400
    ip_unprivileged_port_start: int = 1024

    NAMES = (
        "expire_nodest_conn",
        "expire_quiescent_template",
        "conn_reuse_mode",
        "sloppy_tcp",
        "sloppy_sctp",
        "cache_bypass",
        "nat_icmp_send",
        "schedule_icmp",
        "secure_tcp",
        "run_estimation",
        "lblc_expiration",
        "lblcr_expiration",
    )
