"""Memory-mapped AF_PACKET rings for the packet engine: receive rings (the kernel copies each frame
into shared memory as it arrives, we take every frame ready per look instead of one recv() per
frame), in two shapes: TPACKET_V2 (fixed slots, a frame is ours the moment it is written) and
TPACKET_V3 (the kernel fills whole blocks and hands a block over when full or timed out); and a
TPACKET_V2 transmit ring (frames are written into shared memory and handed over with one send()
per batch).

Frames keep the 10-byte virtio-net header in front of the Ethernet header, exactly as recv() on a
PACKET_VNET_HDR socket returns them, so the Forwarder sees the same bytes either way.
"""

from __future__ import annotations

import mmap
import socket
import struct
from collections.abc import Iterator

SOL_PACKET = 263
PACKET_VERSION = 10
PACKET_RX_RING = 5
PACKET_TX_RING = 13
PACKET_LOSS = 14
PACKET_COPY_THRESH = 7
TPACKET_V2 = 1
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_COPY = 2
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
TP_STATUS_WRONG_FORMAT = 4
VNET_LEN = 10

# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1 (block_status, num_pkts,
# offset_to_first_pkt, ...)
_BLOCK = struct.Struct("=III")  # block_status, num_pkts, offset_to_first_pkt (at offset 8)
# struct tpacket3_hdr: tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, tp_status, tp_mac, tp_net
_FRAME3 = struct.Struct("=IIIIIIHH")
_U32 = struct.Struct("=I")
_U16LE = struct.Struct("<H")
# struct tpacket2_hdr: tp_status, tp_len, tp_snaplen, tp_mac, tp_net (the rest left zero)
_FRAME2 = struct.Struct("=III")
# ... and as the receive side reads it: tp_status, tp_len, tp_snaplen, tp_mac
_RX2 = struct.Struct("=IIIH")
TX_DATA = 32  # TPACKET2_HDRLEN - sizeof(struct sockaddr_ll): where a TX frame's bytes start


class RxRing:
    """A TPACKET_V3 receive ring on `sock` (set PACKET_VNET_HDR before, bind after).

    The kernel hands a block over when it is full or `timeout_ms` after its first frame (the
    retire timer): under load a wake-up brings a whole block, when idle a frame waits up to
    `timeout_ms`. Blocks must hold the largest frame (a 64 KB GSO frame with its headers)."""

    def __init__(
        self, sock: socket.socket, block_size: int = 1 << 17, blocks: int = 16, timeout_ms: int = 1
    ) -> None:
        if block_size % mmap.PAGESIZE:
            raise ValueError("ring block size must be a multiple of the page size")
        self.sock = sock
        self.block_size = block_size
        self.blocks = blocks
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        # struct tpacket_req3: block_size, block_nr, frame_size, frame_nr, retire_blk_tov,
        # sizeof_priv, feature_req_word
        frame_size = 1 << 11  # only a bookkeeping figure in V3: frames are packed in the blocks
        req = struct.pack(
            "=IIIIIII", block_size, blocks, frame_size, block_size * blocks // frame_size, timeout_ms, 0, 0
        )
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.mm = mmap.mmap(
            sock.fileno(), block_size * blocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        self.view = memoryview(self.mm)
        self.cur = 0
        self.blocks_seen = 0
        self.truncated = 0  # never: a block holds the largest frame (kept for the engine's figures)

    def ready(self) -> bool:
        """Whether the current block has been handed to us."""
        return bool(_U32.unpack_from(self.mm, self.cur * self.block_size + 8)[0] & TP_STATUS_USER)

    def take(self, limit: int = 8) -> Iterator[list[bytearray]]:
        """Up to `limit` blocks the kernel has handed over, each as a list of frames (copies, with the
        virtio-net header in front); each block goes back to the kernel before it is yielded."""
        mm = self.mm
        unpack_block, unpack_frame = _BLOCK.unpack_from, _FRAME3.unpack_from
        for _ in range(limit):
            base = self.cur * self.block_size
            status, count, off = unpack_block(mm, base + 8)
            if not status & TP_STATUS_USER:
                return
            frames = []
            pos = base + off
            for _i in range(count):
                nxt, _s, _ns, snap, _len, _st, mac, _net = unpack_frame(mm, pos)
                start = pos + mac - VNET_LEN
                frames.append(bytearray(mm[start : start + VNET_LEN + snap]))
                pos += nxt
            _U32.pack_into(mm, base + 8, TP_STATUS_KERNEL)
            self.cur = (self.cur + 1) % self.blocks
            self.blocks_seen += 1
            yield frames

    def close(self) -> None:
        self.view.release()
        self.mm.close()


class RxRingV2:
    """A TPACKET_V2 receive ring on `sock` (set PACKET_VNET_HDR before, bind after): fixed slots,
    each ours as soon as the kernel has written it, so no frame waits for a block to fill (what keeps
    the V3 ring from short connections). A frame larger than a slot (a GSO super-frame) is written
    cut short and flagged TP_STATUS_COPY, its whole copy queued on the socket (PACKET_COPY_THRESH):
    we read that one with recv(), in its place in the ring, so the order stays the one on the wire."""

    def __init__(
        self, sock: socket.socket, frame_size: int = 1 << 11, frames: int = 4096, recv_size: int = 70000
    ) -> None:
        block = 1 << 16
        if block % frame_size or frames * frame_size % block:
            raise ValueError("ring: slots must fill 64 KB blocks exactly")
        self.sock = sock
        self.frame_size = frame_size
        self.frames = frames
        self.recv_size = recv_size
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        sock.setsockopt(SOL_PACKET, PACKET_COPY_THRESH, 1)
        # struct tpacket_req: block_size, block_nr, frame_size, frame_nr
        req = struct.pack("=IIII", block, frames * frame_size // block, frame_size, frames)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.mm = mmap.mmap(
            sock.fileno(), frames * frame_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        self.cur = 0
        self.blocks_seen = 0  # looks that found frames
        self.truncated = 0  # cut short with no whole copy queued (socket buffer full): dropped

    def take(self, limit: int = 512) -> Iterator[list[bytearray]]:
        """The frames ready now (at most `limit`) as one list of copies, virtio-net header in
        front; every slot goes back to the kernel as soon as it is copied."""
        mm = self.mm
        unpack, release = _RX2.unpack_from, _U32.pack_into
        size, count, cur = self.frame_size, self.frames, self.cur
        frames: list[bytearray] = []
        for _ in range(limit):
            base = cur * size
            status, length, snap, mac = unpack(mm, base)
            if not status & TP_STATUS_USER:
                break
            if snap == length:
                start = base + mac - VNET_LEN
                frames.append(bytearray(mm[start : start + VNET_LEN + snap]))
            elif status & TP_STATUS_COPY:
                try:
                    frames.append(bytearray(self.sock.recv(self.recv_size)))
                except OSError:
                    self.truncated += 1
            else:
                self.truncated += 1
            release(mm, base, TP_STATUS_KERNEL)
            cur += 1
            if cur == count:
                cur = 0
        self.cur = cur
        if frames:
            self.blocks_seen += 1
            yield frames

    def close(self) -> None:
        self.mm.close()


AnyRxRing = RxRing | RxRingV2


def rx_ring(kind: str, sock: socket.socket, timeout_ms: int = 1) -> AnyRxRing:
    """The receive ring the engine's `ring` option names: "v2" or "v3"."""
    if kind == "v2":
        return RxRingV2(sock)
    if kind == "v3":
        return RxRing(sock, timeout_ms=timeout_ms)
    raise ValueError(f"unknown ring {kind!r} (v2, v3)")


class TxRing:
    """A TPACKET_V2 transmit ring on its own socket: `put()` copies a frame (virtio-net header
    first) into the next free slot, `flush()` asks the kernel to send every filled slot with one
    send(). A frame larger than a slot, or no free slot, returns False: the caller sends it the
    plain way (after a flush, so the order on the wire stays the same)."""

    def __init__(self, ifname: str, frame_size: int = 1 << 11, frames: int = 256) -> None:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing
        try:
            s.setsockopt(SOL_PACKET, 15, 1)  # PACKET_VNET_HDR, before the ring
            s.setsockopt(SOL_PACKET, 20, 1)  # PACKET_QDISC_BYPASS
            s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
            s.setsockopt(SOL_PACKET, PACKET_LOSS, 1)  # a malformed slot is skipped, not retried forever
            block = max(mmap.PAGESIZE, frame_size)
            req = struct.pack("=IIII", block, frames * frame_size // block, frame_size, frames)
            s.setsockopt(SOL_PACKET, PACKET_TX_RING, req)
            s.bind((ifname, 0))
            self.mm = mmap.mmap(
                s.fileno(), frames * frame_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
        except OSError:
            s.close()
            raise
        self.sock = s
        self.frame_size = frame_size
        self.frames = frames
        self.room = frame_size - TX_DATA
        self.cur = 0
        self.queued = 0
        self.flushes = 0

    def put(self, frame: bytes | bytearray | memoryview) -> bool:
        n = len(frame)
        if n > self.room or frame[1]:  # too big, or a GSO frame (gso_type set): the plain way
            return False
        base = self.cur * self.frame_size
        mm = self.mm
        if _U32.unpack_from(mm, base)[0] != TP_STATUS_AVAILABLE:
            return False
        mm[base + TX_DATA : base + TX_DATA + n] = frame
        # hdr_len = the whole frame: the kernel copies it into the skb instead of pointing into the
        # ring page, so a slot can be reused at once even if the skb outlives its send (veth hands
        # it to the next namespace's socket queues).
        _U16LE.pack_into(mm, base + TX_DATA + 2, n - VNET_LEN)
        _FRAME2.pack_into(mm, base, TP_STATUS_SEND_REQUEST, n, n)  # read by the kernel at flush()
        self.cur = (self.cur + 1) % self.frames
        self.queued += 1
        return True

    def flush(self) -> None:
        if self.queued:
            self.queued = 0
            self.flushes += 1
            self.sock.send(b"", socket.MSG_DONTWAIT)

    def close(self) -> None:
        self.mm.close()
        self.sock.close()
