"""The packet engine: LVS forwarding (NAT, DR, TUN, FULLNAT) on real frames from user space."""

from pylvs.engines.packet.engine import PacketEngine

ENGINE = PacketEngine

__all__ = ["ENGINE", "PacketEngine"]
