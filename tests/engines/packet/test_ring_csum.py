"""The Internet checksum sum used on the ring path (TUN completes CHECKSUM_PARTIAL segments in
software): csum.sum16 against a plain word-by-word one's complement sum."""

from __future__ import annotations

import random

from pylvs.engines.packet.csum import checksum, sum16


def reference(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return s


def test_sum16_matches_word_by_word_sum() -> None:
    rng = random.Random(6)
    cases = [b"", b"\0", b"\0\0\0\0", b"\xff\xff", b"\xff" * 7, b"\x00\x01" * 30000]
    cases += [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 1600))) for _ in range(300)]
    for data in cases:
        assert sum16(data) == reference(data), data[:16]
        assert sum16(bytearray(data)) == sum16(memoryview(data)) == reference(data)


def test_checksum_of_data_with_its_checksum_is_zero() -> None:
    rng = random.Random(7)
    for _ in range(200):
        data = bytearray(rng.getrandbits(8) for _ in range(rng.randint(2, 1500) & ~1))
        data += checksum(data).to_bytes(2, "big")
        assert checksum(data) == 0
