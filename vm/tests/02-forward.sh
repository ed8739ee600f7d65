#!/bin/sh
# Two VRFs with identical addressing, a host namespace behind each member: pings between the
# hosts of each VRF are forwarded by XDP (the router's IpForwDatagrams stays put) and stay in
# their VRF (the same address in the other VRF sees none of them).
. /vm/lib.sh

step "vrf-red (110) and vrf-blue (120), both 10.0.1.0/24 + 10.0.2.0/24"
identical_vrfs

vrfd_start
for m in red1 red2 blue1 blue2; do
    has_xdp router "$m" || fail "no XDP on $m"
done
ip -n router -d link show dev red1 | grep 'prog/xdp'
member_of vrf-red 110 red2 || fail "vrfctl show: red2 not in vrf-red"
member_of vrf-blue 120 blue2 || fail "vrfctl show: blue2 not in vrf-blue"

# ping_in VRF SRCNS DSTNS OTHERNS: 3 pings from SRCNS to 10.0.2.2, all answered, none forwarded
# by the kernel, all received by DSTNS and none by OTHERNS (same address, other VRF).
ping_in() {
    fwd0=$(snmp router Ip:ForwDatagrams)
    dst0=$(snmp "$3" Icmp:InEchos)
    other0=$(snmp "$4" Icmp:InEchos)
    out=$(nx "$2" ping -c 3 -W 2 -w 15 10.0.2.2 2>&1)
    echo "$out"
    echo "$out" | grep -Eq ', 3 (packets )?received' || fail "$1: ping $2 -> 10.0.2.2: $(echo "$out" | tail -n 1)"
    fwd=$(( $(snmp router Ip:ForwDatagrams) - fwd0 ))
    dst=$(( $(snmp "$3" Icmp:InEchos) - dst0 ))
    other=$(( $(snmp "$4" Icmp:InEchos) - other0 ))
    echo "$1: router IpForwDatagrams +$fwd, $3 InEchos +$dst, $4 InEchos +$other"
    [ "$fwd" -eq 0 ] || fail "$1: the kernel forwarded $fwd datagrams (XDP should have)"
    [ "$dst" -eq 3 ] || fail "$1: $3 got $dst echo requests, expected 3"
    [ "$other" -eq 0 ] || fail "$1: $4 (other VRF) got $other echo requests"
}

step "ping in vrf-red"
ping_in vrf-red ra rb bb
step "ping in vrf-blue"
ping_in vrf-blue ba bb rb
vrfd_log_clean
