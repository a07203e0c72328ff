"""Counters and the kernel's rate estimator (spec §A9)."""

from __future__ import annotations

ESTIMATOR_PERIOD = 2.0  # seconds between estimator ticks


class Stats:
    """64-bit counters with a zero baseline, and exponentially weighted rates."""

    __slots__ = (
        "base",
        "conns",
        "cps_avg",
        "inbps_avg",
        "inbytes",
        "inpkts",
        "inpps_avg",
        "last",
        "outbps_avg",
        "outbytes",
        "outpkts",
        "outpps_avg",
    )

    def __init__(self) -> None:
        self.conns = 0
        self.inpkts = 0
        self.outpkts = 0
        self.inbytes = 0
        self.outbytes = 0
        self.base = (0, 0, 0, 0, 0)  # counters at the last zeroing
        self.last = (0, 0, 0, 0, 0)  # counters at the last estimator tick
        self.cps_avg = 0  # rate x 1024
        self.inpps_avg = 0
        self.outpps_avg = 0
        self.inbps_avg = 0  # rate x 32
        self.outbps_avg = 0

    def raw(self) -> tuple[int, int, int, int, int]:
        return (self.conns, self.inpkts, self.outpkts, self.inbytes, self.outbytes)

    def shown(self) -> tuple[int, int, int, int, int]:
        """The counters as ipvsadm shows them: since the last zeroing."""
        now, base = self.raw(), self.base
        return (
            now[0] - base[0],
            now[1] - base[1],
            now[2] - base[2],
            now[3] - base[3],
            now[4] - base[4],
        )

    def zero(self) -> None:
        self.base = self.raw()
        self.last = self.raw()
        self.cps_avg = self.inpps_avg = self.outpps_avg = 0
        self.inbps_avg = self.outbps_avg = 0

    def estimate(self) -> None:
        """One 2-second estimator tick: avg += (delta scaled - avg) / 4."""
        now = self.raw()
        last = self.last
        self.last = now
        self.cps_avg += (((now[0] - last[0]) << 9) - self.cps_avg) >> 2
        self.inpps_avg += (((now[1] - last[1]) << 9) - self.inpps_avg) >> 2
        self.outpps_avg += (((now[2] - last[2]) << 9) - self.outpps_avg) >> 2
        self.inbps_avg += (((now[3] - last[3]) << 4) - self.inbps_avg) >> 2
        self.outbps_avg += (((now[4] - last[4]) << 4) - self.outbps_avg) >> 2

    def rates(self) -> tuple[int, int, int, int, int]:
        """cps, inpps, outpps, inbps, outbps as ipvsadm --rate shows them."""
        return (
            (self.cps_avg + 511) >> 10,
            (self.inpps_avg + 511) >> 10,
            (self.outpps_avg + 511) >> 10,
            (self.inbps_avg + 15) >> 5,
            (self.outbps_avg + 15) >> 5,
        )
