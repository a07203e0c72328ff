#!/bin/bash
# Runs inside the oracle VM (see ../../../../../shared/oracle/README.md):
#   ipvs-vm.sh -d tests/data/oracle/ipvsadm -o OUT tests/data/oracle/ipvsadm/run-all.sh [NAME.cmds...]
# Each .cmds file gets a fresh IPVS table and writes OUT/NAME.out (format of transcript.sh).
set -u
cd "$ORACLE_HOST"
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(*.cmds)
cp /etc/hosts /tmp/hosts.orig
for f in "${files[@]}"; do
    ipvsadm -C; ipvsadm --set 900 120 300
    ipvsadm --stop-daemon master 2>/dev/null; ipvsadm --stop-daemon backup 2>/dev/null
    cp /tmp/hosts.orig /etc/hosts
    bash ./transcript.sh "$f" >"$ORACLE_OUT/${f%.cmds}.out" 2>&1
done
cp /etc/services "$ORACLE_OUT/services"
cp /tmp/hosts.orig "$ORACLE_OUT/hosts.orig"
cat /etc/nsswitch.conf /etc/resolv.conf >"$ORACLE_OUT/nss.txt" 2>&1
