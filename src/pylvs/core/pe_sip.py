"""The SIP persistence engine (ip_vs_pe_sip): the Call-ID of a UDP datagram joins the template key.

The Call-ID is found the way the kernel's SIP helper finds a header (nf_conntrack_sip): at the start
of a line (never the first line), name `Call-ID` (any case) or the compact `i` not followed by a
letter, optional spaces and continuation lines, a colon, the same again, then a word, optionally
`@` and a second word. A header whose value is empty is skipped and the search goes on from there;
a header name without a colon ends the search. The value must be at most 255 bytes and be followed
by CR or LF (spec §A7).
"""

from __future__ import annotations

import re

PE_NAME = "sip"
PEDATA_MAXLEN = 255  # IP_VS_PEDATA_MAXLEN

_CR, _LF, _SP, _TAB, _AT, _COLON = 13, 10, 32, 9, 64, 58
_EOL = re.compile(rb"[\r\n]")
_NAME = b"call-id"
_CNAME = b"i"


def _ctype_alpha() -> frozenset[int]:
    """The kernel's isalpha: ASCII letters and the ISO 8859-1 letters (not × and ÷)."""
    letters = set(range(65, 91)) | set(range(97, 123))
    letters |= set(range(0xC0, 0x100)) - {0xD7, 0xF7}
    return frozenset(letters)


_ALPHA = _ctype_alpha()
_WORD = frozenset(
    _ALPHA
    | set(range(48, 58))
    | set(b'!"%')
    | set(range(ord("("), ord("/") + 1))
    | set(b":<>?")
    | set(range(ord("["), ord("]") + 1))
    | set(b"_`{}~")
)


_WORD_RUN = re.compile(b"[" + b"".join(re.escape(bytes([c])) for c in sorted(_WORD)) + b"]*")


def _word_len(data: bytes, i: int, limit: int) -> int:
    m = _WORD_RUN.match(data, i, limit)
    return m.end() - i if m is not None else 0


def _callid_len(data: bytes, i: int, limit: int) -> int:
    """A word, or word@word; 0 when there is nothing usable."""
    n = _word_len(data, i, limit)
    j = i + n
    if not n or j == limit or data[j] != _AT:
        return n
    domain = _word_len(data, j + 1, limit)
    return n + 1 + domain if domain else 0


def _follow_continuation(data: bytes, i: int, limit: int) -> int:
    """Past a line end that is followed by a continuation line and its blanks; -1 if it is not."""
    i += 1
    if i >= limit:
        return -1
    if data[i - 1] == _CR and data[i] == _LF:
        i += 1
        if i >= limit:
            return -1
    if data[i] not in (_SP, _TAB):
        return -1
    while i < limit and data[i] in (_SP, _TAB):
        i += 1
    return i


def _skip_whitespace(data: bytes, i: int, limit: int) -> int:
    """Past spaces and continuation lines; -1 when a line ends without continuing."""
    while i < limit:
        c = data[i]
        if c == _SP:
            i += 1
            continue
        if c not in (_CR, _LF):
            break
        i = _follow_continuation(data, i, limit)
        if i < 0:
            return -1
    return i


def _get_header(data: bytes, start: int) -> tuple[int, int, int]:
    """(result, offset, length) of the first Call-ID header at or after `start`: result 1 found,
    0 none, -1 found but its value unusable (offset then says where its value begins)."""
    limit = len(data)
    i = start
    while i < limit:
        m = _EOL.search(data, i)  # the next line end (the kernel steps there byte by byte)
        if m is None:
            break
        i = m.start() + 1
        if i >= limit:
            break
        if data[i - 1] == _CR and data[i] == _LF:
            i += 1
            if i >= limit:
                break
        if data[i] in (_SP, _TAB):  # a continuation line
            i += 1
            continue
        if limit - i >= len(_NAME) and data[i : i + len(_NAME)].lower() == _NAME:
            i += len(_NAME)
        elif (
            limit - i >= len(_CNAME) + 1
            and data[i : i + len(_CNAME)].lower() == _CNAME
            and data[i + len(_CNAME)] not in _ALPHA
        ):
            i += len(_CNAME)
        else:
            i += 1
            continue
        i = _skip_whitespace(data, i, limit)
        if i < 0 or i >= limit or data[i] != _COLON:
            break
        i += 1
        if i >= limit:
            break
        i = _skip_whitespace(data, i, limit)
        if i < 0:
            break
        n = _callid_len(data, i, limit)
        return (1 if n else -1), i, n
    return 0, 0, 0


def sip_callid(payload: bytes) -> bytes | None:
    """The Call-ID of a SIP message (the UDP payload), or None when it has no usable one."""
    if not payload:
        return None
    dataoff = 0
    while True:
        ret, off, n = _get_header(payload, dataoff)
        if ret > 0:
            break
        if ret == 0:
            return None
        dataoff += off  # as the kernel does: the next search starts at the unusable value
    if n > PEDATA_MAXLEN:
        return None
    end = off + n
    if end == len(payload) or payload[end] not in (_CR, _LF):
        return None
    return payload[off:end]
