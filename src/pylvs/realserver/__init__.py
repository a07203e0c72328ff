"""The real-server side of LVS: VIP on lo, ARP suppression, and the TUN decapsulation agent."""
