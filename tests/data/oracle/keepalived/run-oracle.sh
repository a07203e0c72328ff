#!/bin/bash
# Runs inside the oracle VM (keepalived 2.2 + real IPVS). From the repo root:
#   ../shared/oracle/ipvs-vm.sh -m 768 -t 600 -d tests/data/oracle/keepalived -o OUT \
#       tests/data/oracle/keepalived/run-oracle.sh [ka-NAME.conf ...]
# For each ka-*.conf: start the lab's real servers (lab_servers.py) in a namespace "rs" reached
# over a veth from the root namespace, run keepalived's checker alone (-C) for SETTLE seconds,
# save `ipvsadm -Sn` to OUT/NAME.phase1.Sn; then start a listener on 192.168.201.13:80 (a failed
# server comes back), wait again, save OUT/NAME.phase2.Sn. keepalived's log goes to OUT/NAME.log.
set -u
SETTLE=${SETTLE:-12}
OUT=${ORACLE_OUT:?run with -o OUTDIR}
rm -rf /tmp/ka && cp -r "${ORACLE_HOST:?}" /tmp/ka && chmod +x /tmp/ka/*.sh
cd /tmp/ka
keepalived --version 2>&1 | head -1 > "$OUT/keepalived.version"
ip netns add rs
ip -n rs link set lo up
ip link add vrs type veth peer name eth0 netns rs
ip addr add 192.168.201.1/24 dev vrs
ip link set vrs up
for a in 10 11 12 13 20; do ip -n rs addr add 192.168.201.$a/24 dev eth0; done
ip -n rs link set eth0 up
[ $# -gt 0 ] || set -- ka-*.conf   # the configs to run (default: all)
for conf in "$@"; do
    name=${conf%.conf}
    ipvsadm -C
    ip netns exec rs python3 /tmp/ka/lab_servers.py /tmp/ka > /dev/null &
    lab=$!
    sleep 2
    keepalived -n -l -D -C -f /tmp/ka/$conf -p /tmp/ka.pid -c /tmp/kc.pid > "$OUT/$name.log" 2>&1 &
    ka=$!
    sleep "$SETTLE"
    ipvsadm -Sn > "$OUT/$name.phase1.Sn"
    { ipvsadm -Ln --thresholds; ipvsadm -Ln --timeout; } > "$OUT/$name.phase1.extra"
    ip netns exec rs python3 -c '
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.168.201.13", 80)); s.listen(16); s.settimeout(0.2)
end = time.time() + 60
while time.time() < end:
    try:
        c, _ = s.accept(); c.close()
    except OSError:
        pass
' &
    late=$!
    sleep "$SETTLE"
    ipvsadm -Sn > "$OUT/$name.phase2.Sn"
    kill $ka; wait $ka
    kill $late $lab 2>/dev/null; wait $late $lab 2>/dev/null
    echo "== $name"; cat "$OUT/$name.phase1.Sn"; echo "-- phase2"; cat "$OUT/$name.phase2.Sn"
done
