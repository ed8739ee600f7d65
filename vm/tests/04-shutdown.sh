#!/bin/sh
# SIGTERM: vrfd exits 0, detaches from every member, removes its pins and leaves the ip rules
# as they were.
. /vm/lib.sh

router
vrf vrf-red 110
vrf vrf-blue 120
host r1 h1 10.3.1.1/24 10.3.1.2/24
host b1 h2 10.3.1.1/24 10.3.1.2/24
enslave r1 vrf-red
enslave b1 vrf-blue
rules_before=$(ip -n router rule show; ip -n router -6 rule show)
vrfd_start
has_xdp router r1 || fail "no XDP on r1"
has_xdp router b1 || fail "no XDP on b1"
[ -n "$(ls "$PIN")" ] || fail "nothing pinned in $PIN"
ls "$PIN" | tr '\n' ' '
echo
for dev in r1 b1 vrf-red vrf-blue; do
    has_tc router "$dev" && echo "tc on $dev: $(tc -n router filter show dev "$dev" egress | head -n 1)"
done
vrfd_log_clean

step "SIGTERM"
kill -TERM "$VRFD_PID"
wait_for 20 dead "$VRFD_PID" || fail "vrfd still running 20 s after SIGTERM"
wait "$VRFD_PID"
rc=$?
VRFD_PID=
tail -n 3 "$VRFD_LOG"
[ "$rc" -eq 0 ] || fail "vrfd exited with status $rc after SIGTERM"
vrfd_log_clean
for dev in r1 b1 vrf-red vrf-blue; do
    has_xdp router "$dev" && fail "XDP still on $dev"
    has_tc router "$dev" && fail "tc filter still on $dev: $(tc -n router filter show dev "$dev" egress)"
done
[ -e "$PIN" ] && fail "pins left behind: $(ls "$PIN")"
rules_after=$(ip -n router rule show; ip -n router -6 rule show)
[ "$rules_before" = "$rules_after" ] || fail "ip rules changed: before [$rules_before] after [$rules_after]"
true

