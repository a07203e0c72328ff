#!/bin/bash
# Runs inside the oracle VM: SIP persistence (--pe sip) on real IPVS, then the mh table-size limit.
#   ipvs-vm.sh -m 768 -t 500 -d tests/data/oracle/sip tests/data/oracle/sip/sip.sh > sip.out 2> sip.err   (kernel 6.1)
# Sections start with "=== NAME".
set -u
G=$ORACLE_HOST
modprobe ip_vs_pe_sip 2>/dev/null
for n in cl dir rs1 rs2 rs3; do ip netns add $n; ip -n $n link set lo up; done
ip -n dir link add br0 type bridge; ip -n dir addr add 192.168.1.100/24 dev br0; ip -n dir link set br0 up
ip -n dir link add vcl type veth peer name eth0 netns cl
ip -n dir addr add 172.25.254.100/24 dev vcl; ip -n dir link set vcl up
ip -n cl addr add 172.25.254.10/24 dev eth0; ip -n cl addr add 172.25.254.11/24 dev eth0; ip -n cl link set eth0 up
k=1
for ip in 192.168.1.10 192.168.1.20 192.168.1.30; do
    ip -n dir link add vrs$k type veth peer name eth0 netns rs$k
    ip -n dir link set vrs$k master br0; ip -n dir link set vrs$k up
    ip -n rs$k addr add $ip/24 dev eth0; ip -n rs$k link set eth0 up
    ip -n rs$k route add default via 192.168.1.100
    ip netns exec rs$k python3 "$G/sip_udp.py" serve rs$k $ip 5060 &
    k=$((k + 1))
done
ip netns exec dir sysctl -qw net.ipv4.ip_forward=1
sleep 2
D="ip netns exec dir"
echo "=== rules"
$D ipvsadm -A -u 172.25.254.100:5060 -s rr -p 600 --pe sip; echo "[exit $?]"
$D ipvsadm -a -u 172.25.254.100:5060 -r 192.168.1.10:5060 -m
$D ipvsadm -a -u 172.25.254.100:5060 -r 192.168.1.20:5060 -m
$D ipvsadm -a -u 172.25.254.100:5060 -r 192.168.1.30:5060 -m
$D ipvsadm -Ln
$D ipvsadm -S -n
echo "=== traffic"
ip netns exec cl python3 "$G/sip_udp.py" send 172.25.254.100 5060 \
    a1:172.25.254.10:5001:call-A \
    a2:172.25.254.10:5002:call-A \
    b1:172.25.254.10:5003:call-B \
    a3:172.25.254.10:5004:i=call-A \
    c1:172.25.254.11:5001:call-A \
    d1:172.25.254.10:5001:call-D \
    n1:172.25.254.10:5005:- \
    e1:172.25.254.11:5002:x@y.example \
    e2:172.25.254.10:5006:x@y.example
for c in "ipvsadm -Lnc --persistent-conn" "ipvsadm -Lnc" "cat /proc/net/ip_vs_conn" "ipvsadm -Ln --stats --exact"; do
    echo "=== $c"
    $D $c
done
echo "=== tcp service with --pe sip"
$D ipvsadm -A -t 172.25.254.100:5060 -s rr -p 600 --pe sip; echo "[exit $?]"
$D ipvsadm -a -t 172.25.254.100:5060 -r 192.168.1.10:5060 -m
ip netns exec cl timeout 3 bash -c 'exec 3<>/dev/tcp/172.25.254.100/5060' && echo "tcp connected" || echo "tcp not connected"
$D ipvsadm -Lnc --persistent-conn | grep -c TCP
$D ipvsadm -Ln --stats --exact -t 172.25.254.100:5060
kill $(jobs -p) 2>/dev/null
echo "=== mh limit: -E -s mh with 4094 servers"
$D ipvsadm -C
{ echo "-A -t 10.9.9.9:80 -s rr"; for i in $(seq 1 4094); do echo "-a -t 10.9.9.9:80 -r 10.8.$((i / 256)).$((i % 256)):80 -m"; done; } | $D ipvsadm -R; echo "[restore exit $?]"
$D ipvsadm -E -t 10.9.9.9:80 -s mh; echo "[exit $?]"
$D ipvsadm -Ln | head -4
$D ipvsadm -Ln | grep -c -- '->'
echo "=== mh limit: -E -s mh --pe? no: -E -s mh -p (other fields) with 4094 servers"
$D ipvsadm -E -t 10.9.9.9:80 -s mh -p 100; echo "[exit $?]"
$D ipvsadm -Ln | head -4
echo "=== mh limit: 4093 servers then -E -s mh"
$D ipvsadm -d -t 10.9.9.9:80 -r 10.8.0.1:80
$D ipvsadm -E -t 10.9.9.9:80 -s mh; echo "[exit $?]"
$D ipvsadm -Ln | head -4
echo "=== mh limit: add the 4094th server to an mh service"
$D ipvsadm -a -t 10.9.9.9:80 -r 10.8.0.1:80 -m; echo "[exit $?]"
$D ipvsadm -Ln | grep -c -- '->'
echo "=== mh limit: -A -s mh then 4094 servers by restore"
{ echo "-A -t 10.9.9.8:80 -s mh"; for i in $(seq 1 4094); do echo "-a -t 10.9.9.8:80 -r 10.7.$((i / 256)).$((i % 256)):80 -m"; done; } | $D ipvsadm -R; echo "[restore exit $?]"
$D ipvsadm -Ln -t 10.9.9.8:80 | grep -c -- '->'
echo "=== mh limit: edit back to rr and add, then mh"
$D ipvsadm -E -t 10.9.9.8:80 -s rr; echo "[exit $?]"
$D ipvsadm -a -t 10.9.9.8:80 -r 10.7.255.255:80 -m; echo "[exit $?]"
$D ipvsadm -Ln -t 10.9.9.8:80 | grep -c -- '->'
$D ipvsadm -E -t 10.9.9.8:80 -s mh; echo "[exit $?]"
$D ipvsadm -Ln -t 10.9.9.8:80 | head -4
exit 0
