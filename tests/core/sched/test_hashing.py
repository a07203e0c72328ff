"""hash_32, address folding and hsiphash (checked against the kernel's lib/test_siphash.c vectors)."""

from __future__ import annotations

from pylvs.core.sched.hashing import fold, hash_32
from pylvs.core.sched.siphash import hsiphash, hsiphash_u32

from ..helpers import ip

# lib/test_siphash.c, BITS_PER_LONG == 64: hsiphash(bytes 0..i-1, key 00..0f) for i = 0..63.
HSIPHASH_VECTORS = [
    0x050FC4DC, 0x7D57CA93, 0x4DC7D44D, 0xE7DDF7FB, 0x88D38328, 0x49533B67, 0xC59F22A7, 0x9BB11140,
    0x8D299A8E, 0x6C063DE4, 0x92FF097F, 0xF94DC352, 0x57B4D9A2, 0x1229FFA7, 0xC0F95D34, 0x2A519956,
    0x7D908B66, 0x63DBD80C, 0xB473E63E, 0x8D297D1C, 0xA6CCE040, 0x2B45F844, 0xA320872E, 0xDAE6C123,
    0x67349C8C, 0x705B0979, 0xCA9913A5, 0x4ADE3B35, 0xEF6CD00D, 0x4AB1E1F4, 0x43C5E663, 0x8C21D1BC,
    0x16A7B60D, 0x7A8FF9BF, 0x1F2A753E, 0xBF186B91, 0xADA26206, 0xA3C33057, 0xAE3A36A1, 0x7B108392,
    0x99E41531, 0x3F1AD944, 0xC8138825, 0xC28949A6, 0xFAF8876B, 0x9F042196, 0x68B1D623, 0x8B5114FD,
    0xDF074C46, 0x12CC86B3, 0x0A52098F, 0x9D292F9A, 0xA2F41F12, 0x43A71ED0, 0x73F0BCE6, 0x70A7E980,
    0x243C6D75, 0xFDB71513, 0xA67D8A08, 0xB7E8F148, 0xF7A644EE, 0x0F1837F2, 0x4B6694E0, 0xB7BBB3A8,
]  # fmt: skip
K0, K1 = 0x0706050403020100, 0x0F0E0D0C0B0A0908


def test_hsiphash_kernel_vectors() -> None:
    for i, want in enumerate(HSIPHASH_VECTORS):
        assert hsiphash(bytes(range(i)), K0, K1) == want, i


def test_hsiphash_u32_is_four_little_endian_bytes() -> None:
    # hsiphash_1u32(0x03020100) is vector 4 in the kernel's self-test.
    assert hsiphash((0x03020100).to_bytes(4, "little"), K0, K1) == HSIPHASH_VECTORS[4]
    assert hsiphash_u32(0x0A000001, 7) == hsiphash(bytes([1, 0, 0, 10]), 7, 7)


def test_hash_32_and_fold() -> None:
    assert fold(ip("10.0.0.1")) == 0x0A000001
    assert fold(ip("2001:db8::1")) == 0x20010DB8 ^ 0 ^ 0 ^ 1
    assert hash_32(fold(ip("172.25.254.1")), 8) == 39  # the spec's sh example
    assert hash_32(0, 8) == 0
    assert hash_32(1, 32) == 0x61C88647
