"""`pylvs realserver setup|teardown`: what the seed does by hand on each real server for DR and TUN.

setup: the VIP as a /32 on lo; arp_ignore=1 and arp_announce=2 on all and lo (the RS must not answer
ARP for the VIP, or it steals the director's traffic); for TUN also rp_filter=0. The previous sysctl
values are saved in a state file so teardown restores exactly what was there.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess

STATE_DIR = "/run/pylvs"


def _state_path(vip: str) -> str:
    # One file per network namespace and VIP: several real servers may share one host's /run.
    netns = os.stat("/proc/self/ns/net").st_ino
    return os.path.join(STATE_DIR, f"realserver-{netns}-{vip}.json")


def _read(key: str) -> str:
    with open("/proc/sys/" + key.replace(".", "/")) as fh:
        return fh.read().strip()


def _write(key: str, value: str) -> None:
    with open("/proc/sys/" + key.replace(".", "/"), "w") as fh:
        fh.write(value)


def sysctls_for(mode: str) -> dict[str, str]:
    s = {
        "net.ipv4.conf.all.arp_ignore": "1",
        "net.ipv4.conf.lo.arp_ignore": "1",
        "net.ipv4.conf.all.arp_announce": "2",
        "net.ipv4.conf.lo.arp_announce": "2",
    }
    if mode == "tun":
        s["net.ipv4.conf.all.rp_filter"] = "0"
        s["net.ipv4.conf.default.rp_filter"] = "0"
    return s


def check_vip(vip: str) -> str:
    try:
        a = ipaddress.ip_address(vip)
    except ValueError:
        raise ValueError(f"{vip!r} is not an IP address") from None
    if a.version != 4:
        raise ValueError("only IPv4 VIPs are supported")
    return str(a)


def setup(mode: str, vip: str) -> list[str]:
    """Apply the settings; returns what was done, one line each."""
    vip = check_vip(vip)
    done = []
    saved = {}
    for key, value in sysctls_for(mode).items():
        saved[key] = _read(key)
        _write(key, value)
        done.append(f"sysctl {key}={value}")
    p = subprocess.run(["ip", "addr", "add", f"{vip}/32", "dev", "lo"], capture_output=True, text=True)
    added = p.returncode == 0
    if added:
        done.append(f"ip addr add {vip}/32 dev lo")
    elif "exists" not in p.stderr:
        raise OSError(f"ip addr add {vip}/32 dev lo: {p.stderr.strip()}")
    os.makedirs(STATE_DIR, exist_ok=True)
    with open(_state_path(vip), "w") as fh:
        json.dump({"mode": mode, "sysctls": saved, "added_vip": added}, fh)
    return done


def teardown(vip: str) -> list[str]:
    vip = check_vip(vip)
    done = []
    try:
        with open(_state_path(vip)) as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        state = {"sysctls": {}, "added_vip": True}
    for key, value in state.get("sysctls", {}).items():
        _write(key, value)
        done.append(f"sysctl {key}={value}")
    if state.get("added_vip", True):
        p = subprocess.run(["ip", "addr", "del", f"{vip}/32", "dev", "lo"], capture_output=True, text=True)
        if p.returncode == 0:
            done.append(f"ip addr del {vip}/32 dev lo")
    try:
        os.unlink(_state_path(vip))
    except OSError:
        pass
    return done
