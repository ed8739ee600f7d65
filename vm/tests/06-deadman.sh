#!/bin/sh
# The dead-man switch on 6.1, where tc is attached through netlink (no link: the filter outlives
# vrfd). After kill -9, nothing of vrf-xdp may go on deciding beyond the switch's 2 s: what the
# host sends inside vrf-red, which tc_vrf_egress redirected while vrfd ran (vrf_xmit never saw
# it), goes through vrf_xmit again (the kernel's path, its TX counter the witness), and the
# program itself says vrfd_gone. `vrfd --detach` then removes the filters and pins kill -9 left.
. /vm/lib.sh

step "router: vrf-red (110) with 10.0.2.0/24 behind red2"
router
nx router sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null ||
    fail "disable IPv6 in the router"
vrf vrf-red 110
host red2 rb 10.0.2.1/24 10.0.2.2/24
enslave red2 vrf-red
neighbours red2 rb 10.0.2.1/24 10.0.2.2/24

ping_from_vrf() {
    tx0=$(tx_packets router vrf-red)
    out=$(nx router ping -I vrf-red -c 3 -W 2 -w 15 10.0.2.2 2>&1)
    echo "$out" | grep -Eq ', 3 (packets )?received' || fail "ping -I vrf-red 10.0.2.2: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
    TX_DELTA=$(( $(tx_packets router vrf-red) - tx0 ))
}

vrfd_start
step "vrfd runs: the tc fast path sends host traffic (vrf_xmit +0)"
ping_from_vrf
echo "vrf-red TX packets +$TX_DELTA"
[ "$TX_DELTA" -eq 0 ] || fail "vrf_xmit transmitted $TX_DELTA packets while vrfd ran"

step "kill -9 vrfd: after 2 s the kernel decides again"
kill -KILL "$VRFD_PID"
wait "$VRFD_PID" 2>/dev/null
VRFD_PID=
has_tc router vrf-red && echo "tc filter on vrf-red survived vrfd (netlink tc, no link)"
sleep 2
ping_from_vrf
echo "vrf-red TX packets +$TX_DELTA"
[ "$TX_DELTA" -ge 3 ] || fail "vrf_xmit counted $TX_DELTA of 3: something of vrf-xdp still decides 2 s after kill -9"
lookup_is vrf-red red2 10.0.2.2 pass vrfd_gone || fail "the pinned program does not say vrfd_gone"

step "vrfd --detach removes what kill -9 left"
nx router vrfd --detach --pin-path "$PIN" || fail "vrfd --detach"
has_tc router vrf-red && fail "tc filter left on vrf-red after --detach"
has_tc router red2 && fail "tc filter left on red2 after --detach"
[ -e "$PIN" ] && fail "pins left after --detach: $(ls "$PIN")"
true
