"""keepalived.conf parsing: syntax, keyword tables, warnings, refusals, and the oracle's rules."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pytest

from pylvs.core.director import Director, take_snapshot
from pylvs.core.types import Fwd, Proto, SvcFlags
from pylvs.health.config import ConfigError, load_config
from pylvs.health.manager import HealthManager
from pylvs.health.rules import services_of
from pylvs.ipvsadm.save import format_save

ORACLE = Path(__file__).resolve().parent.parent / "data" / "oracle" / "keepalived"


def write(tmp_path: Path, text: str, name: str = "keepalived.conf") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def rules_of(path: Path) -> list[str]:
    """The rules pylvs programs for a configuration before any check has run (no traffic sent)."""
    cfg = load_config(str(path))
    d = Director()

    async def go() -> None:
        m = HealthManager(d, cfg, run_scripts=False)
        await m.start(checks=False)
        await m.stop(remove_services=False)

    asyncio.run(go())
    return sorted(format_save(take_snapshot(d), numeric=True).splitlines())


# -- the oracle: keepalived 2.2.7 in a VM, `ipvsadm -Sn` after it started these files ---------------


@pytest.mark.parametrize("name", ["ka-sample", "ka-group", "ka-extra"])
def test_same_rules_as_keepalived(name: str) -> None:
    # These files have no checkers, so the rules are what keepalived programs at start (phase1 = phase2).
    want = sorted((ORACLE / "out" / f"{name}.phase1.Sn").read_text().splitlines())
    assert rules_of(ORACLE / f"{name}.conf") == want


def test_thresholds_and_timeouts_as_keepalived_set_them() -> None:
    # `ipvsadm -Ln --thresholds` / `--timeout` after keepalived started ka-extra.conf (out/ka-extra.phase1.extra)
    extra = (ORACLE / "out" / "ka-extra.phase1.extra").read_text()
    assert (
        "192.168.201.2:80             200        50" in extra
        and "Timeout (tcp tcpfin udp): 600 60 45" in extra
    )
    cfg = load_config(str(ORACLE / "ka-extra.conf"))
    d = Director()

    async def go() -> None:
        m = HealthManager(d, cfg, run_scripts=False)
        await m.start(checks=False)
        await m.stop(remove_services=False)

    asyncio.run(go())
    snap = take_snapshot(d)
    (dest,) = next(s for s in snap.services if s.port == 80 and s.addr == "10.50.0.1").dests
    assert (dest.u_threshold, dest.l_threshold) == (200, 50)
    assert snap.timeouts == (600, 60, 45)


def test_oracle_files_load_with_expected_warnings() -> None:
    cfg = load_config(str(ORACLE / "ka-sample.conf"))
    text = "\n".join(cfg.warnings)
    assert "vrrp_instance VI_1: VRRP is not done by pylvs" in text
    assert "ka-sample.conf:110: real server port 8080 differs" in text
    assert len(cfg.files) == 2  # the include glob found ka-sample.d/extra.conf
    for name in ("ka-checks", "ka-quorum", "ka-group"):
        load_config(str(ORACLE / f"{name}.conf"))


# -- syntax ------------------------------------------------------------------------------------


def test_comments_braces_next_line_and_one_line_blocks(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """! a comment
# another
virtual_server 10.0.0.1 80   # trailing
{
    lb_algo rr ! bang comment
    lb_kind DR
    protocol TCP
    real_server 10.0.0.2 80 { weight 3 }
    real_server 10.0.0.3 80
    {
        weight 2
        TCP_CHECK { connect_timeout 2
            nb_get_retry 4 }
    }
}
""",
    )
    cfg = load_config(str(p))
    assert cfg.warnings == []
    (vs,) = cfg.virtual_servers
    assert vs.scheduler == "rr" and vs.method is not None and vs.method.fwd == Fwd.DROUTE
    assert [rs.weight for rs in vs.real_servers] == [3, 2]
    ck = vs.real_servers[1].checkers[0]
    assert ck.kind == "TCP_CHECK" and ck.timing.connect_timeout == 2 and ck.timing.retry == 4


def test_quoted_strings_and_parameters(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """$VIP=10.0.0.1
virtual_server $VIP 80 {
    protocol TCP
    real_server 10.0.0.2 80 {
        MISC_CHECK {
            misc_path "${_PWD}/check.sh --name 'a b'"
        }
    }
}
""",
    )
    cfg = load_config(str(p))
    vs = cfg.virtual_servers[0]
    assert vs.addr == ipaddress.ip_address("10.0.0.1")
    assert vs.real_servers[0].checkers[0].misc_path == f"{tmp_path}/check.sh --name 'a b'"


def test_include_glob_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    write(tmp_path / "conf.d", "virtual_server 10.0.0.5 80 {\n protocol TCP\n}\n", "a.conf")
    write(tmp_path / "conf.d", "virtual_server 10.0.0.6 80 {\n protocol TCP\n}\n", "b.conf")
    p = write(tmp_path, "include conf.d/*.conf\ninclude nothing/*.conf\n")
    cfg = load_config(str(p))
    assert [str(vs.addr) for vs in cfg.virtual_servers] == ["10.0.0.5", "10.0.0.6"]
    assert any("no file matches" in w for w in cfg.warnings)


def test_group_ranges(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """virtual_server_group G {
  10.0.0.1-3 80
  10.0.1.254-10.0.2.1 443
  10.0.3.0/30 8080
  2001:db8::1-2 80
  fwmark 9
}
virtual_server group G {
  protocol TCP
  lb_kind TUN
}
""",
    )
    cfg = load_config(str(p))
    keys = [r.key for r in services_of(cfg.virtual_servers[0], cfg)]
    addrs = [(str(k.addr), k.port) for k in keys if not k.fwmark]
    assert addrs[:3] == [("10.0.0.1", 80), ("10.0.0.2", 80), ("10.0.0.3", 80)]
    assert ("10.0.1.255", 443) in addrs and ("10.0.2.1", 443) in addrs
    assert [a for a in addrs if a[1] == 8080] == [(f"10.0.3.{i}", 8080) for i in range(4)]
    assert ("2001:db8::2", 80) in addrs
    assert keys[-1].fwmark == 9


def test_defaults_follow_keepalived(tmp_path: Path) -> None:
    p = write(tmp_path, "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n }\n}\n")
    cfg = load_config(str(p))
    (rule,) = services_of(cfg.virtual_servers[0], cfg)
    assert rule.key.protocol == Proto.UDP  # keepalived 2.2.7's default, seen in the oracle
    assert rule.cfg.scheduler == "wlc" and rule.cfg.flags == SvcFlags.NONE


def test_persistence_and_flags(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """virtual_server 10.0.0.1 0 {
 protocol TCP
 lb_algo mh
 mh-port
 persistence_timeout
 persistence_granularity 255.255.0.0
}
virtual_server 2001:db8::1 80 {
 protocol UDP
 ops
 persistence_timeout 30
 persistence_granularity 64
}
""",
    )
    cfg = load_config(str(p))
    (r4,) = services_of(cfg.virtual_servers[0], cfg)
    (r6,) = services_of(cfg.virtual_servers[1], cfg)
    assert r4.cfg.timeout == 360 and r4.cfg.netmask == 0xFFFF0000
    assert r4.cfg.flags == SvcFlags.PERSISTENT | SvcFlags.SCHED2
    assert r6.cfg.timeout == 30 and r6.cfg.netmask == 64
    assert r6.cfg.flags == SvcFlags.PERSISTENT | SvcFlags.ONEPACKET


def test_fullnat_and_tunnel_options(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """virtual_server 10.0.0.1 80 {
 protocol TCP
 lb_kind FULLNAT
 real_server 10.0.0.2 8080 { }
 real_server 10.0.0.3 80 { lvs_method TUN type gue port 6080 csum }
}
""",
    )
    cfg = load_config(str(p))
    rs = cfg.virtual_servers[0].real_servers
    assert cfg.virtual_servers[0].method is not None and cfg.virtual_servers[0].method.fwd == Fwd.FULLNAT
    m = rs[1].method
    assert m is not None and m.fwd == Fwd.TUNNEL and m.tun_port == 6080 and int(m.tun_flags) == 1


def test_unknown_keywords_and_unacted_sections_warn_once_each(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """global_defs {
   router_id X
   frobnicate yes
}
vrrp_script chk { script "true" }
vrrp_instance VI_1 {
   state MASTER
   virtual_ipaddress {
      10.0.0.1
   }
}
virtual_server 10.0.0.1 80 {
   protocol TCP
   wibble 3
   real_server 10.0.0.2 80 {
      SMTP_CHECK { }
      HTTP_GET {
         url {
            path /
            regex "ok"
         }
      }
   }
}
""",
    )
    cfg = load_config(str(p))
    w = cfg.warnings
    assert len(w) == 6, w
    assert f"{p}:3: unknown keyword 'frobnicate' in global_defs; ignored" in w
    assert any(x.startswith(f"{p}:5: vrrp_script chk:") for x in w)
    assert any(x.startswith(f"{p}:6: vrrp_instance VI_1:") for x in w)
    assert f"{p}:14: unknown keyword 'wibble' in virtual_server 10.0.0.1 80; ignored" in w
    assert any(x.startswith(f"{p}:16: SMTP_CHECK is not done by pylvs") for x in w)
    assert any(x.startswith(f"{p}:20: 'regex'") for x in w)
    assert cfg.global_defs.router_id == "X"


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("virtual_server 10.0.0.1 80 {\n  protocol TCP\n", 1, "never closed"),
        ("virtual_server 10.0.0.1 80 {\n}\n}\n", 3, "without a matching"),
        ("virtual_server 10.0.0.300 80 {\n}\n", 1, "not an IP address"),
        (
            "virtual_server 10.0.0.1 80 {\n weight x\n real_server 10.0.0.2 80 {\n  weight many\n }\n}\n",
            4,
            "not a whole number",
        ),
        ("virtual_server 10.0.0.1 80 {\n lb_kind BRIDGE\n}\n", 2, "unknown method"),
        ("virtual_server 10.0.0.1 80 {\n protocol ICMP\n}\n", 2, "not one of TCP"),
        ("virtual_server 10.0.0.1 80 {\n lb_algo loadbalance\n}\n", 2, "unknown scheduler"),
        ("virtual_server group NOPE {\n}\n", 1, "no virtual_server_group"),
        ("virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  HTTP_GET {\n  }\n }\n}\n", 3, "url"),
        (
            "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  HTTP_GET {\n   url {\n    digest abc\n   }\n  }\n }\n}\n",
            5,
            "MD5",
        ),
        ("virtual_server 10.0.0.1 80 {\n real_server 2001:db8::1 80 {\n }\n}\n", 2, "address family"),
        ("virtual_server 10.0.0.1 80 {\n delay_loop -1\n}\n", 2, "out of range"),
        ('virtual_server 10.0.0.1 80 {\n virtualhost "abc\n}\n', 2, "unterminated"),
        ("include missing.conf\n", 1, "no such file"),
        ("virtual_server_group G {\n 10.0.0.9-3 80\n}\n", 2, "ends before it starts"),
        (
            "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  DNS_CHECK {\n   type PTR\n  }\n }\n}\n",
            4,
            "DNS type",
        ),
    ],
)
def test_bad_files_are_refused_with_file_line_reason(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_config(str(p))
    e = ei.value
    assert e.file == str(p) and e.line == line, str(e)
    assert reason in e.reason, str(e)


def test_error_in_included_file_names_that_file(tmp_path: Path) -> None:
    write(tmp_path, "virtual_server 10.0.0.1 80 {\n  lb_algo\n}\n", "bad.conf")
    p = write(tmp_path, "global_defs {\n}\ninclude bad.conf\n")
    with pytest.raises(ConfigError) as ei:
        load_config(str(p))
    assert ei.value.file == str(tmp_path / "bad.conf") and ei.value.line == 2


def test_extra_words_are_reported(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n real_server 10.0.0.2 80 {\n  weight 3 4\n }\n}\n",
    )
    cfg = load_config(str(p))
    assert cfg.warnings == [f"{p}:4: 'weight': extra words ignored: 4"]
    assert cfg.virtual_servers[0].real_servers[0].weight == 3


def test_persistence_timeout_zero_is_not_persistent(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "global_defs {\n lvs_id OLD\n}\nvirtual_server 10.0.0.1 80 {\n protocol TCP\n persistence_timeout 0\n}\n",
    )
    cfg = load_config(str(p))
    (rule,) = services_of(cfg.virtual_servers[0], cfg)
    assert not rule.cfg.persistent and cfg.global_defs.router_id == "OLD"


def test_quorum_above_total_weight_is_reduced(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n quorum 9\n real_server 10.0.0.2 80 {\n  weight 2\n }\n}\n",
    )
    cfg = load_config(str(p))
    assert cfg.virtual_servers[0].quorum == 2
    assert "exceeds the total weight 2" in cfg.warnings[0]


def test_cli_check_reports_errors_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pylvs.health.__main__ import main

    p = write(tmp_path, "virtual_server 10.0.0.1 80 {\n")
    assert main(["check", str(p)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {p}:1:") and "Traceback" not in err
