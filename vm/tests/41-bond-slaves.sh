#!/bin/sh
# A bond in vrf-red whose slaves change while vrfd runs. Native XDP on a bond lives on its
# slaves: a slave added later gets the bond's program from the kernel, a released one loses it,
# and vrfd must follow (PORTS maps each slave to the bond). A third slave joins, the first two
# leave, and the new one alone carries the traffic by XDP (the router's IpForwDatagrams stays
# put, bond0's counter grows, bh receives every echo); the two come back; the bond leaves the
# VRF (vrfd detaches, the kernel serves it) and comes back (served by XDP again). Last, a veth
# that is a VRF member with vrfd's XDP on it is moved straight into the bond, and a backup slave's
# frames are left to the kernel (which drops them).
. /vm/lib.sh

step "vrf-red with red2 (10.0.2.1/24) and bond0 over sa, sb (10.0.3.1/24, active-backup)"
router
vrf vrf-red 110
host red2 rb 10.0.2.1/24 10.0.2.2/24
enslave red2 vrf-red
neighbours red2 rb 10.0.2.1/24 10.0.2.2/24
bond_in_vrf vrf-red a b

# xdp_of DEV: what `ip -d link` says about XDP on the router's DEV (for the log).
xdp_of() {
    _x=$(ip -n router -d link show dev "$1" | grep -o 'prog/xdp.*' | head -n 1)
    echo "$1: ${_x:-no prog/xdp in ip -d link}"
}
active_slave() { ip -n router -d link show dev bond0 | grep -o 'active_slave [^ ]*' | cut -d' ' -f2; }
bh_active() { ip -n bh -d link show dev bond0 | grep -o 'active_slave [^ ]*' | cut -d' ' -f2; }

vrfd_start
has_xdp router bond0 || fail "no XDP on bond0"
member_of vrf-red 110 bond0 || fail "vrfctl show: bond0 not in vrf-red"
xdp_of bond0
xdp_of sa
xdp_of sb

# forwarded MEMBER: vrfctl's forwarded_packets of MEMBER in vrf-red (0 when not listed).
forwarded() {
    vrfctl_r stats --vrf vrf-red --interfaces --json 2>/dev/null | tr -d ' \n' |
        grep -Eo "\"name\":\"$1\",\"ifindex\":[0-9]+,\"up\":[a-z]+,\"rx_packets\":[0-9]+,\"rx_bytes\":[0-9]+,\"forwarded_packets\":[0-9]+" |
        grep -Eo '[0-9]+$' || echo 0
}

# by_xdp WHAT: both directions between red2's host and bh by XDP, bond0's counter up by ≥ 6.
by_xdp() {
    before=$(forwarded bond0)
    ping_in "$1" rb 10.0.3.2 bh - 0
    ping_in "$1-reverse" bh 10.0.2.2 rb - 0
    after=$(forwarded bond0)
    echo "$1: bond0 forwarded_packets $before -> $after"
    [ "$after" -ge $(( before + 6 )) ] || fail "$1: bond0 forwarded $before -> $after, expected +6"
}

# served_on SLAVE: `vrfctl show` lists SLAVE among the ports XDP serves bond0 on.
served_on() {
    vrfctl_r show --json 2>/dev/null | tr -d ' \n' | grep -Eq "\"name\":\"bond0\"[^}]*\"ports\":\[[^]]*\"$1\""
}

# settle WANT: both bonds carry over sWANT/eWANT, bh reaches the router, and vrfd serves bond0 on
# sWANT (a slave that became active enters PORTS once vrfd has read its new state: until then
# the kernel forwards what arrives there).
settle() {
    wait_for 10 sh -c "ip -n router -d link show dev bond0 | grep -q 'active_slave s$1 '" ||
        fail "bond0's active slave is $(active_slave), not s$1"
    wait_for 10 sh -c "ip -n bh -d link show dev bond0 | grep -q 'active_slave e$1 '" ||
        fail "bh's bond0's active slave is $(bh_active), not e$1"
    wait_for 10 nx bh ping -c 1 -W 1 10.0.3.1 || fail "bh cannot reach the router over e$1"
    wait_for 10 served_on "s$1" || fail "vrfd does not serve bond0 on s$1: $(vrfctl_r show)"
    vrfctl_r show | grep bond0
}

step "two slaves: by XDP"
by_xdp two-slaves

step "a third slave sc joins while vrfd runs: the kernel gives it the bond's program"
bond_slave_pair c
bond_join c
xdp_of sc
wait_for 10 sh -c "ip -n router link show dev sc | grep -q 'master bond0'" || fail "sc is not in bond0"

step "sa and sb leave: sc alone carries, by XDP"
bond_leave a
bond_leave b
xdp_of sa
xdp_of sb
settle c
by_xdp sc-alone
# The released slaves are plain links again: the bond took its program off them.
no_xdp router sa || fail "sa still has XDP after leaving bond0: $(xdp_of sa)"
no_xdp router sb || fail "sb still has XDP after leaving bond0: $(xdp_of sb)"

step "sa and sb come back, sc leaves: by XDP over sa or sb"
bond_join a
bond_join b
bond_leave c
no_xdp router sc || fail "sc still has XDP after leaving bond0: $(xdp_of sc)"
wait_for 10 sh -c "ip -n router -d link show dev bond0 | grep -Eq 'active_slave s[ab] '" ||
    fail "bond0 did not fail over to sa or sb: $(active_slave)"
wait_for 10 sh -c "ip -n bh -d link show dev bond0 | grep -Eq 'active_slave e[ab] '" ||
    fail "bh's bond0 did not fail over to ea or eb: $(bh_active)"
echo "active: router $(active_slave), bh $(bh_active)"
# Both ends must use the same pair: steer bh onto the router's choice.
want=$(active_slave | tr -d s)
ip -n bh link set bond0 type bond active_slave "e$want" 2>/dev/null
settle "$want"
by_xdp slaves-back

step "bond0 leaves vrf-red: vrfd detaches it and the kernel serves it"
ip -n router link set bond0 nomaster || fail "bond0 out of vrf-red"
wait_for 10 no_xdp router bond0 || fail "XDP still on bond0 out of the VRF: $(xdp_of bond0)"
wait_for 10 not_member_of vrf-red 110 bond0 || fail "vrfctl show still lists bond0 in vrf-red"
xdp_of sa
xdp_of sb

step "bond0 back in vrf-red: by XDP again"
enslave bond0 vrf-red
bond_neighbours
wait_for 10 has_xdp router bond0 || fail "no XDP on bond0 back in the VRF"
member_of vrf-red 110 bond0 || fail "vrfctl show: bond0 not back in vrf-red"
settle "$(active_slave | tr -d s)"
by_xdp bond-back

step "a VRF member with vrfd's XDP (sd in vrf-red) moved straight into bond0"
ip -n router link add sd type veth peer name ed netns bh || fail "veth sd"
enslave sd vrf-red
ip -n router link set sd up || fail "sd up"
wait_for 10 has_xdp router sd || fail "no XDP on sd in vrf-red"
xdp_of sd
# The bond enslaves only a device that is down (6.1: "Device can not be enslaved while up");
# down, sd keeps vrfd's program. Then one `ip link set master`: the kernel takes sd out of the
# VRF and offers it to the bond at once, while vrfd's program is still on it.
ip -n router link set sd down || fail "sd down"
has_xdp router sd || fail "taking sd down removed vrfd's XDP"
if out=$(ip -n router link set sd master bond0 2>&1); then
    echo "sd moved into bond0 at once: $out"
else
    echo "the kernel refused: $out"
    echo "sd now: $(ip -n router link show dev sd | head -n 1)"
    ip -n router link show dev sd | grep -q 'master vrf-red' &&
        fail "the refused move left sd in vrf-red"
    # Out of the VRF, vrfd detaches sd; then the bond takes it.
    wait_for 10 no_xdp router sd || fail "vrfd left its XDP on sd out of the VRF: $(xdp_of sd)"
    wait_for 10 not_member_of vrf-red 110 sd || fail "vrfctl show still lists sd in vrf-red"
    ip -n router link set sd master bond0 || fail "sd into bond0 after vrfd detached it"
fi
xdp_of sd
ip -n router link show dev sd | grep -q 'master bond0' || fail "sd is not in bond0"
ip -n router link set sd nomaster || fail "sd out of bond0"
no_xdp router sd || fail "sd still has XDP after leaving bond0: $(xdp_of sd)"

step "a backup slave: the bond drops what arrives on it, so XDP must leave it to the kernel"
# sk joins as a backup; its peer ek is a plain host (bk, 10.0.3.9) that sends to bond0's MAC.
netns bk
ip -n router link add sk type veth peer name ek netns bk || fail "veth sk"
ip -n router link set sk master bond0 || fail "sk into bond0"
wait_for 10 sh -c "ip -n router -d link show dev sk | grep -q 'state BACKUP'" ||
    fail "sk is not a backup slave: $(ip -n router -d link show dev sk)"
ip -n bk addr add 10.0.3.9/24 dev ek || fail "address in bk"
ip -n bk link set ek up || fail "ek up"
ip -n bk route add default via 10.0.3.1 || fail "default route in bk"
ip -n bk neigh replace 10.0.3.1 lladdr "$(mac router bond0)" dev ek nud permanent || fail "neighbour in bk"
wait_for 10 sh -c "ip -n router link show dev sk | grep -q LOWER_UP" || fail "sk has no carrier"
served_on sk && fail "vrfd serves bond0 on its backup slave sk: $(vrfctl_r show)"
fwd0=$(snmp router Ip:ForwDatagrams)
rb0=$(snmp rb Icmp:InEchos)
nx bk ping -c 3 -W 1 10.0.2.2 >/dev/null 2>&1
fwd=$(( $(snmp router Ip:ForwDatagrams) - fwd0 ))
rb=$(( $(snmp rb Icmp:InEchos) - rb0 ))
echo "from the backup slave: router IpForwDatagrams +$fwd, rb InEchos +$rb"
[ "$rb" -eq 0 ] || fail "rb got $rb echo requests that arrived on a backup slave (the kernel drops them)"
ip -n router link set sk nomaster || fail "sk out of bond0"

vrfd_log_clean

step "a broadcast bond (no native XDP in that mode): generic mode; XDP forwards what arrives on it, the kernel what leaves"
# Last, since the fallback is a warning in vrfd's log. bond1 in vrf-red over sg; its peer is
# eth0 of host bg (10.0.4.2).
netns bg
ip -n router link add bond1 type bond mode broadcast || fail "bond1"
ip -n router link add sg type veth peer name eth0 netns bg || fail "veth sg"
nx router ethtool -K sg gro on tx off >/dev/null || fail "ethtool -K sg"
ip -n router link set sg master bond1 || fail "sg into bond1"
enslave bond1 vrf-red
ip -n router addr add 10.0.4.1/24 dev bond1 || fail "address on bond1"
ip -n router link set bond1 up || fail "bond1 up"
ip -n bg addr add 10.0.4.2/24 dev eth0 || fail "address in bg"
ip -n bg link set eth0 up || fail "eth0 up in bg"
ip -n bg route add default via 10.0.4.1 || fail "default route in bg"
nx bg ethtool -K eth0 gro on tx off >/dev/null || fail "ethtool -K eth0 in bg"
wait_for 10 sh -c "ip -n router link show dev bond1 | grep -q LOWER_UP" || fail "bond1 has no carrier"
ip -n router neigh replace 10.0.4.2 lladdr "$(mac bg eth0)" dev bond1 nud permanent || fail "neighbour on bond1"
ip -n bg neigh replace 10.0.4.1 lladdr "$(mac router bond1)" dev eth0 nud permanent || fail "neighbour in bg"
wait_for 10 sh -c "ip -n router -d link show dev bond1 | grep -q xdpgeneric" ||
    fail "bond1 is not in generic XDP: $(xdp_of bond1)"
xdp_of bond1
grep 'generic mode' "$VRFD_LOG" | tail -n 1
grep -q 'attaching in generic mode' "$VRFD_LOG" || fail "vrfd did not say it fell back to generic mode"
wait_for 10 member_of vrf-red 110 bond1 || fail "vrfctl show: bond1 not in vrf-red: $(vrfctl_r show)"
# In broadcast mode the bond cannot transmit redirected frames (6.1: "Unknown bonding mode 3
# for xdp xmit", dropped): what leaves through bond1 is the kernel's, what arrives on it XDP's.
# In each direction one leg goes each way: IpForwDatagrams +3 (the leg out of bond1), bond1's
# forwarded_packets +3 (the leg into it).
wait_for 10 grep -Eq 'cannot take an XDP redirect.*interface=bond1' "$VRFD_LOG" ||
    fail "vrfd did not refuse bond1 as a redirect target"
lookup_is vrf-red red2 10.0.4.2 pass egress || fail "vrfctl lookup: a frame out of bond1 is not the kernel's"
lookup_is vrf-red bond1 10.0.2.2 forward || fail "vrfctl lookup: a frame into bond1 is not XDP's"
generic_leg() {
    before=$(forwarded bond1)
    fwd0=$(snmp router Ip:ForwDatagrams)
    ping_in "$1" "$2" "$3" "$4" - 1
    fwd=$(( $(snmp router Ip:ForwDatagrams) - fwd0 ))
    after=$(forwarded bond1)
    echo "$1: bond1 forwarded_packets $before -> $after"
    [ "$fwd" -eq 3 ] || fail "$1: the kernel forwarded $fwd datagrams, expected the 3 leaving through bond1"
    [ "$after" -ge $(( before + 3 )) ] || fail "$1: XDP forwarded $before -> $after on bond1, expected +3"
}
generic_leg generic rb 10.0.4.2 bg
generic_leg generic-reverse bg 10.0.2.2 rb
