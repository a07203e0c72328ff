"""One curl transfer from a lab's client namespace, for the benches that time bulk transfers."""

from __future__ import annotations

from pylvs.lab.netns import Netns


def curl_transfer(n: Netns, url: str, *extra: str, field: str = "size_download") -> list[str]:
    """curl's `<bytes> <seconds>` for one transfer to `url` (`field`: size_download or size_upload),
    split into words; fewer than two when curl printed nothing (failed or timed out)."""
    argv = ["curl", "-s", "--max-time", "60", "-o", "/dev/null", "-w", f"%{{{field}}} %{{time_total}}"]
    p = n.run("client", [*argv, *extra, url], check=False, timeout=90)
    return p.stdout.split()
