"""Small netlink clients on the standard library: nfnetlink_queue (nfqueue), nftables set elements
(nftset) and conntrack (conntrack). Each one does only what the fast path needs."""
