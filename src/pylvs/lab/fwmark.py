"""The seed's firewall-mark lab (2.4): first the problem, then the fix.

Not available yet on the packet engine: AF_PACKET taps run before netfilter and cannot see marks, so
fwmark services need an NFQUEUE path that is still to be written (see docs/labs.md)."""

from __future__ import annotations

import argparse
import sys


def run_fwmark(args: argparse.Namespace) -> int:
    print(
        "pylvs lab fwmark: not implemented yet: the packet engine cannot see firewall marks "
        "(needs the NFQUEUE path); see docs/labs.md",
        file=sys.stderr,
    )
    return 1
