"""Garbage collection for a process that forwards packets.

Such a process holds a big, long-lived connection table (IPVS keeps closed TCP connections for two
minutes: 300,000 entries at 2,500 connections per second) and allocates a few objects per packet.
With CPython's default thresholds (a young collection every 700 allocations, and full collections
as the long-lived set grows by a quarter) the collector walks that table again and again: measured
in the packet engine's kernel path, a third of the Python time spent giving a connection to the
kernel (12 µs -> 8 µs without it). The engines call tune() once started: what exists then is frozen
(never scanned again) and young collections come every GEN0 allocations. Cycles are still
collected, only less often."""

from __future__ import annotations

import gc

GEN0 = 20_000


def tune() -> None:
    gc.freeze()
    t0, t1, t2 = gc.get_threshold()
    if t0 and t0 < GEN0:  # 0: collection disabled by the embedding program; leave it so
        gc.set_threshold(GEN0, max(t1, 20), max(t2, 20))
