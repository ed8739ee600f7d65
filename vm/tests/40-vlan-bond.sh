#!/bin/sh
# VLAN sub-interfaces and a bond as VRF members. One trunk r0 carries r0.100 (vrf-red) and
# r0.200 (vrf-blue) with identical addressing; XDP runs once, on r0, and forwards both VLANs
# (the router's IpForwDatagrams stays put, r0.100's own counters go up) without ever mixing
# them. A bond of two veths in vrf-red carries traffic by XDP, also while one slave is down.
# Last, rx-vlan-offload on the trunk (the tags could be stripped before XDP): vrfd passes the
# trunk's frames to the kernel, which still delivers them right.
. /vm/lib.sh

step "trunk r0: r0.100 in vrf-red, r0.200 in vrf-blue, both 10.0.1.1/24"
router
vrf vrf-red 110
vrf vrf-blue 120
# The switch side: sw's eth0 is the trunk's peer; its VLAN devices go to one namespace each, so
# red1 and blue1 both are 10.0.1.2 (and even share a MAC, eth0's).
netns sw
netns red1
netns blue1
ip -n router link add r0 type veth peer name eth0 netns sw || fail "veth r0"
# In-band tags from the sender (veth tx-vlan-offload keeps them in the skb, out of XDP's sight),
# GRO on to receive XDP-redirected frames, TX checksum offload off.
nx sw ethtool -K eth0 txvlan off gro on tx off >/dev/null || fail "ethtool -K eth0 in sw"
nx router ethtool -K r0 rxvlan off txvlan off >/dev/null || fail "ethtool -K r0"
ip -n router link set r0 up || fail "r0 up"
ip -n sw link set eth0 up || fail "eth0 up in sw"
for v in 100 200; do
    ns=red1
    [ "$v" = 200 ] && ns=blue1
    ip -n router link add link r0 name "r0.$v" type vlan id "$v" || fail "r0.$v"
    ip -n sw link add link eth0 name "v$v" type vlan id "$v" || fail "v$v in sw"
    ip -n sw link set "v$v" netns "$ns" || fail "v$v to $ns"
    ip -n "$ns" addr add 10.0.1.2/24 dev "v$v" || fail "address in $ns"
    ip -n "$ns" link set "v$v" up || fail "v$v up"
    ip -n "$ns" route add default via 10.0.1.1 || fail "default route in $ns"
done
enslave r0.100 vrf-red
enslave r0.200 vrf-blue
for d in r0.100 r0.200; do
    ip -n router addr add 10.0.1.1/24 dev "$d" || fail "address on $d"
    ip -n router link set "$d" up || fail "$d up"
done
host red2 rb 10.0.2.1/24 10.0.2.2/24
host blue2 bb 10.0.2.1/24 10.0.2.2/24
enslave red2 vrf-red
enslave blue2 vrf-blue
neighbours red2 rb 10.0.2.1/24 10.0.2.2/24
neighbours blue2 bb 10.0.2.1/24 10.0.2.2/24
sw_mac=$(mac sw eth0)
r0_mac=$(mac router r0)
for v in 100 200; do
    ns=red1
    [ "$v" = 200 ] && ns=blue1
    ip -n router neigh replace 10.0.1.2 lladdr "$sw_mac" dev "r0.$v" nud permanent ||
        fail "neighbour on r0.$v"
    ip -n "$ns" neigh replace 10.0.1.1 lladdr "$r0_mac" dev "v$v" nud permanent ||
        fail "neighbour in $ns"
done

step "a bond of two veths in vrf-red: bond0, 10.0.3.1/24 (active-backup)"
bond_in_vrf vrf-red a b

vrfd_start
has_xdp router r0 || fail "no XDP on the trunk r0"
no_xdp router r0.100 || fail "XDP on r0.100: it belongs on the trunk"
has_xdp router red2 || fail "no XDP on red2"
has_xdp router bond0 || fail "no XDP on bond0"
ip -n router -d link show dev bond0 | grep 'prog/xdp'
member_of vrf-red 110 r0.100 || fail "vrfctl show: r0.100 not in vrf-red"
member_of vrf-blue 120 r0.200 || fail "vrfctl show: r0.200 not in vrf-blue"
member_of vrf-red 110 bond0 || fail "vrfctl show: bond0 not in vrf-red"

# forwarded_on VRF MEMBER: vrfctl's ingress counters of MEMBER show forwarded packets.
forwarded_on() {
    _s=$(vrfctl_r stats --vrf "$1" --interfaces --json 2>&1) || fail "vrfctl stats: $_s"
    echo "$_s" | tr -d ' \n' |
        grep -Eq "\"name\":\"$2\",\"ifindex\":[0-9]+,\"up\":[a-z]+,\"rx_packets\":[0-9]+,\"rx_bytes\":[0-9]+,\"forwarded_packets\":[1-9]" ||
        fail "vrfctl stats: nothing forwarded on $2: $_s"
}

step "VLAN 100 (red) and VLAN 200 (blue), same addresses, both ways through the trunk"
ping_in vrf-red rb 10.0.1.2 red1 blue1 0
ping_in vrf-blue bb 10.0.1.2 blue1 red1 0
ping_in vrf-red-reverse red1 10.0.2.2 rb bb 0
ping_in vrf-blue-reverse blue1 10.0.2.2 bb rb 0
forwarded_on vrf-red r0.100
forwarded_on vrf-blue r0.200

step "the bond: red2 <-> bh through bond0, by XDP"
ping_in bond rb 10.0.3.2 bh blue1 0
ping_in bond-reverse bh 10.0.2.2 rb bb 0
forwarded_on vrf-red bond0

step "one slave down: the other carries it, still by XDP"
active_slave() { ip -n router -d link show dev bond0 | grep -o 'active_slave [^ ]*' | cut -d' ' -f2; }
active=$(active_slave)
[ -n "$active" ] || fail "bond0 has no active slave: $(ip -n router -d link show dev bond0)"
echo "active slave: $active"
ip -n router link set "$active" down || fail "$active down"
wait_for 10 sh -c "ip -n router -d link show dev bond0 | grep -o 'active_slave [^ ]*' | grep -qv ' $active\$'" ||
    fail "bond0 did not fail over from $active"
echo "now active: $(active_slave)"
# Let both bonds settle (the host side fails over on carrier loss).
wait_for 10 nx bh ping -c 1 -W 1 10.0.3.1 || fail "bh cannot reach the router after failover"
ping_in bond-failover rb 10.0.3.2 bh blue1 0
ping_in bond-failover-reverse bh 10.0.2.2 rb bb 0
vrfd_log_clean

step "egress-qos-map on r0.100 sets a PCP: what leaves through it goes to the kernel"
ip -n router link set r0.100 type vlan egress-qos-map 0:3 || fail "egress-qos-map on r0.100"
wait_for 10 grep -q "egress-qos-map sets a PCP" "$VRFD_LOG" || fail "vrfd did not say why r0.100's egress goes to the kernel"
lookup_is vrf-red red2 10.0.1.2 pass egress || fail "vrfctl lookup: a forward out of r0.100 is not passed as egress"
ping_in vrf-red-pcp rb 10.0.1.2 red1 blue1 1
ip -n router link set r0.100 type vlan egress-qos-map 0:0 || fail "egress-qos-map 0:0 on r0.100"
# Back to PCP 0 everywhere: XDP pushes the tag again.
wait_for 10 lookup_is vrf-red red2 10.0.1.2 forward || fail "vrfctl lookup: no forward out of r0.100 after egress-qos-map 0:0"
ping_in vrf-red-pcp0 rb 10.0.1.2 red1 blue1 0

step "rx-vlan-offload on the trunk: tags could be stripped, the kernel forwards everything on r0"
nx router ethtool -K r0 rxvlan on >/dev/null || fail "ethtool -K r0 rxvlan on"
wait_for 10 grep -q 'may strip VLAN tags' "$VRFD_LOG" || fail "vrfd did not say why r0 goes to the kernel"
grep 'may strip VLAN tags' "$VRFD_LOG" | head -n 1
# vrfctl show says it per member: r0.100's frames arrive on r0, whose tags may be stripped.
show=$(vrfctl_r show --json) || fail "vrfctl show: $show"
echo "$show" | tr -d '\n' | grep -q '"name": *"r0.100"[^}]*"kernel": *"vlan tags may be stripped on r0' ||
    fail "vrfctl show does not say why r0.100 goes to the kernel: $show"
vrfctl_r show | grep 'vrf-red'
ping_in vrf-red-stripped red1 10.0.2.2 rb bb 1
ping_in vrf-blue-stripped blue1 10.0.2.2 bb rb 1
