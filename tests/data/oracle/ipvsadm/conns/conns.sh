#!/bin/bash
# Runs inside the oracle VM: real connections through real IPVS, then every listing that shows them.
#   ipvs-vm.sh -m 768 -d tests/data/oracle/ipvsadm/conns tests/data/oracle/ipvsadm/conns/conns.sh > conns.out
# (client.py and rs_server.py are copies of shared/oracle/guest/.) Sections start with "=== NAME".
set -u
G=$ORACLE_HOST
for n in cl dir rs1 rs2; do ip netns add $n; ip -n $n link set lo up; done
ip -n dir link add br0 type bridge; ip -n dir addr add 192.168.1.100/24 dev br0; ip -n dir link set br0 up
ip -n dir link add vcl type veth peer name eth0 netns cl
ip -n dir addr add 172.25.254.100/24 dev vcl; ip -n dir link set vcl up
ip -n cl addr add 172.25.254.10/24 dev eth0; ip -n cl addr add 172.25.254.11/24 dev eth0; ip -n cl link set eth0 up
k=1
for ip in 192.168.1.10 192.168.1.20; do
    ip -n dir link add vrs$k type veth peer name eth0 netns rs$k
    ip -n dir link set vrs$k master br0; ip -n dir link set vrs$k up
    ip -n rs$k addr add $ip/24 dev eth0; ip -n rs$k link set eth0 up
    ip -n rs$k route add default via 192.168.1.100
    ip netns exec rs$k python3 "$G/rs_server.py" rs$k $ip 80 &
    k=$((k + 1))
done
ip netns exec dir sysctl -qw net.ipv4.ip_forward=1
sleep 2
D="ip netns exec dir"
$D ipvsadm -A -t 172.25.254.100:80 -s rr
$D ipvsadm -a -t 172.25.254.100:80 -r 192.168.1.10:80 -m -w 2
$D ipvsadm -a -t 172.25.254.100:80 -r 192.168.1.20:80 -m -w 1
$D ipvsadm -A -t 172.25.254.100:81 -s rr -p 60
$D ipvsadm -a -t 172.25.254.100:81 -r 192.168.1.10:80 -m
$D ipvsadm -A -f 66 -s rr -p 120
$D ipvsadm -a -f 66 -r 192.168.1.20:80 -m
$D iptables -t mangle -A PREROUTING -d 172.25.254.100 -p tcp --dport 82 -j MARK --set-mark 66
ip netns exec cl python3 "$G/client.py" --count 5 --src 172.25.254.10 --dst 172.25.254.100 --mode close
ip netns exec cl python3 "$G/client.py" --count 2 --src 172.25.254.10,172.25.254.11 --dst 172.25.254.100 --port 81 --mode close
ip netns exec cl python3 "$G/client.py" --count 2 --src 172.25.254.11 --dst 172.25.254.100 --port 82 --mode hold &
sleep 3
for c in "cat /proc/net/ip_vs_conn" "ipvsadm -Lnc" "ipvsadm -Lc" "ipvsadm -Lnc --persistent-conn" \
         "ipvsadm -Ln --stats --exact" "ipvsadm -Ln --stats" "ipvsadm -L --stats" "ipvsadm -Ln --stats -X" \
         "ipvsadm -Ln --rate" "ipvsadm -Ln --persistent-conn" "ipvsadm -Ln" "ipvsadm -Ln --thresholds" \
         "cat /proc/net/ip_vs_conn"; do
    echo "=== $c"
    $D $c
done
kill $(jobs -p) 2>/dev/null; exit 0
