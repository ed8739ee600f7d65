#!/bin/sh
# vrfd follows the kernel while it runs: enslave, unenslave, a new VRF, a deleted VRF.
. /vm/lib.sh

router
vrf vrf-red 110
host r1 h1 10.2.1.1/24 10.2.1.2/24
enslave r1 vrf-red
vrfd_start
has_xdp router r1 || fail "no XDP on r1"

step "enslave r2 -> attached within 2 s"
ip -n router link add r2 type veth peer name p2 || fail "veth r2"
ip -n router link set r2 up
ip -n router link set p2 up
ip -n router addr add 10.2.2.1/24 dev r2
enslave r2 vrf-red
wait_for 2 has_xdp router r2 || fail "r2 enslaved: no XDP on it within 2 s"
wait_for 2 member_of vrf-red 110 r2 || fail "r2 enslaved: not listed in vrf-red"
has_xdp router p2 && fail "XDP on p2, which is no member"
ip -n router route show table 110 | grep -q '^10.2.2.0/24 dev r2' || fail "kernel: 10.2.2.0/24 not in table 110"
wait_for 2 lookup_is vrf-red r1 10.2.2.1 pass local || fail "r2's local route (table 110) not mirrored within 2 s"

step "r2 nomaster -> detached within 2 s"
ip -n router link set r2 nomaster || fail "nomaster"
wait_for 2 no_xdp router r2 || fail "r2 unenslaved: XDP still on it after 2 s"
wait_for 2 not_member_of vrf-red 110 r2 || fail "r2 unenslaved: still listed in vrf-red after 2 s"
has_xdp router r1 || fail "r1 lost its XDP"

step "new VRF vrf-green (130) with member g1"
vrf vrf-green 130
ip -n router link add g1 type veth peer name pg1 || fail "veth g1"
ip -n router link set g1 up
ip -n router link set pg1 up
enslave g1 vrf-green
wait_for 2 has_xdp router g1 || fail "g1 in vrf-green: no XDP within 2 s"
wait_for 2 member_of vrf-green 130 g1 || fail "vrfctl show: no vrf-green (table 130) with member g1 within 2 s"
vrfs

step "delete vrf-green"
ip -n router link del vrf-green || fail "ip link del vrf-green"
wait_for 2 no_xdp router g1 || fail "vrf-green deleted: XDP still on g1 after 2 s"
wait_for 2 vrf_gone vrf-green || fail "vrf-green deleted: still in vrfctl show after 2 s"
member_of vrf-red 110 r1 || fail "vrf-red lost r1"
vrfs
alive "$VRFD_PID" || fail "vrfd died"
vrfd_log_clean
