#!/bin/sh
# What the host itself sends inside a VRF (a socket bound to the VRF device, as `ping -I`,
# `ip vrf exec` or OpenVPN's --bind-dev do) takes the tc fast path: vrfd gives the VRF device a
# root qdisc (without one, vrf_ip_out() never passes the packet through the device) and
# tc_vrf_egress redirects it straight out of the member. The witness is the kernel's own
# counter: vrf_xmit() counts every packet it transmits on the VRF device, and a redirected
# packet never reaches it (the control run shows vrf_xmit does count them once the program is
# gone and the qdisc stays). A second VRF with identical addressing sees none of it.
. /vm/lib.sh

# IPv6 autoconfiguration would send MLD/RS through the VRF devices and blur their counters.
step "router: vrf-red (110) and vrf-blue (120), both with 10.0.2.0/24 behind a member"
router
nx router sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null ||
    fail "disable IPv6 in the router"
vrf vrf-red 110
vrf vrf-blue 120
host red1 ra 10.0.1.1/24 10.0.1.2/24
host red2 rb 10.0.2.1/24 10.0.2.2/24
host blue2 bb 10.0.2.1/24 10.0.2.2/24
enslave red1 vrf-red
enslave red2 vrf-red
enslave blue2 vrf-blue
neighbours red1 ra 10.0.1.1/24 10.0.1.2/24
neighbours red2 rb 10.0.2.1/24 10.0.2.2/24
neighbours blue2 bb 10.0.2.1/24 10.0.2.2/24

# tx_packets DEV: the router's TX packet counter of DEV.
tx_packets() { ip -n router -s link show dev "$1" | awk '/TX:/ { getline; print $2; exit }'; }

# ping_from_vrf [PING ARGS]: 3 pings bound to vrf-red from the router to 10.0.2.2; sets TX_DELTA
# (vrf-red's TX delta); fails unless all are answered by rb and none reach bb.
ping_from_vrf() {
    tx0=$(tx_packets vrf-red)
    rb0=$(snmp rb Icmp:InEchos)
    bb0=$(snmp bb Icmp:InEchos)
    out=$(nx router ping -I vrf-red "$@" -c 3 -W 2 -w 15 10.0.2.2 2>&1)
    echo "$out" | grep -Eq ', 3 (packets )?received' || fail "ping -I vrf-red 10.0.2.2: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
    rb=$(( $(snmp rb Icmp:InEchos) - rb0 ))
    bb=$(( $(snmp bb Icmp:InEchos) - bb0 ))
    [ "$rb" -eq 3 ] || fail "rb got $rb echo requests, expected 3"
    [ "$bb" -eq 0 ] || fail "bb (vrf-blue, same address) got $bb echo requests"
    TX_DELTA=$(( $(tx_packets vrf-red) - tx0 ))
}

# --no-persist: the stop below must take vrfd's qdisc and program with it.
VRFD_ARGS=--no-persist
vrfd_start
VRFD_ARGS=
step "vrfd gave vrf-red a root qdisc and tc egress programs"
tc -n router qdisc show dev vrf-red | grep -q 'pfifo_fast' || fail "no pfifo_fast root qdisc on vrf-red: $(tc -n router qdisc show dev vrf-red)"
has_tc router vrf-red || fail "no tc program on vrf-red egress"
has_tc router red2 || fail "no tc program on red2 egress (member tx counter)"

step "ping bound to vrf-red with vrfd: the tc fast path sends it (vrf_xmit never sees it)"
ping_from_vrf
echo "vrf-red TX packets +$TX_DELTA"
[ "$TX_DELTA" -eq 0 ] || fail "vrf_xmit transmitted $TX_DELTA packets: the tc fast path did not take them"
stats=$(vrfctl_r stats --vrf vrf-red --json 2>&1) || fail "vrfctl stats: $stats"
echo "$stats" | tr -d ' \n' | grep -q '"vrf_egress"' && {
    echo "$stats" | tr -d ' \n' | grep -Eq '"vrf_egress":\{[^}]*"forwarded_packets":[3-9]' ||
        fail "vrfctl stats shows no vrf_egress forwards: $stats"
}

vrfd_log_clean

# Rules ahead of the l3mdev rule (1000) can catch what the host sends: its uid, the VRF device as
# oif, a socket's mark. Table 999 is empty, so the kernel still routes by l3mdev: the witness is
# that vrf_xmit now transmits them (the kernel decided), and the fast path is back without it.
# (vrfd warns about each rule: the log was checked clean above.)
# vrfd's own word that it applied a rule change, not a guess at how long it takes (a fixed 1 s
# once let a ping overlap vrfd's update in the TCG guest: +1 to the kernel).
logged() { [ "$(grep -c "$1" "$VRFD_LOG")" -gt "$2" ]; }
KERNEL_DECIDES='kernel decides this VRF.*vrf=vrf-red'
FAST_AGAIN='fast path again vrf=vrf-red'
for sel in "uidrange 0-0" "oif vrf-red" "fwmark 0x42"; do
    step "a rule ahead of l3mdev ($sel): the host's pings it can catch go to the kernel"
    n=$(grep -c "$KERNEL_DECIDES" "$VRFD_LOG")
    nx router ip rule add pref 900 $sel lookup 999 || fail "ip rule add pref 900 $sel lookup 999"
    wait_for 20 logged "$KERNEL_DECIDES" "$n" || fail "$sel: vrfd never said the kernel decides vrf-red"
    sleep 0.3
    case "$sel" in
    fwmark*)
        ping_from_vrf
        [ "$TX_DELTA" -eq 0 ] || fail "$sel: unmarked pings went to the kernel (+$TX_DELTA)"
        ping_from_vrf -m 66 # 0x42: this ping takes decimal marks only
        ;;
    *) ping_from_vrf ;;
    esac
    echo "vrf-red TX packets +$TX_DELTA"
    [ "$TX_DELTA" -ge 3 ] || fail "$sel: vrf_xmit sent $TX_DELTA of 3: the fast path took what the rule can catch"
    n=$(grep -c "$FAST_AGAIN" "$VRFD_LOG")
    nx router ip rule del pref 900 || fail "ip rule del pref 900"
    wait_for 20 logged "$FAST_AGAIN" "$n" || fail "$sel removed: vrfd never said vrf-red takes the fast path again"
    sleep 0.3
    ping_from_vrf
    [ "$TX_DELTA" -eq 0 ] || fail "$sel removed: vrf_xmit still sends (+$TX_DELTA)"
done
stats=$(vrfctl_r stats --vrf vrf-red --json 2>&1) || fail "vrfctl stats: $stats"
echo "$stats" | tr -d ' \n' | grep -Eq '"policy_rule":[1-9]' || fail "no policy_rule count: $stats"

step "without vrfd: its qdisc is gone; with a root qdisc but no program, vrf_xmit sends it"
vrfd_stop
tc -n router qdisc show dev vrf-red | grep -q 'pfifo_fast' && fail "vrfd left its root qdisc on vrf-red"
has_tc router vrf-red && fail "vrfd left a tc program on vrf-red"
# The control: the same qdisc vrfd adds, without the program. Now the kernel passes the packets
# through the VRF device and vrf_xmit counts them, so the +0 above was the fast path's doing.
tc -n router qdisc add dev vrf-red root pfifo_fast || fail "tc qdisc add dev vrf-red root pfifo_fast"
ping_from_vrf
echo "vrf-red TX packets +$TX_DELTA"
[ "$TX_DELTA" -ge 3 ] || fail "the witness does not work: vrf_xmit counted only $TX_DELTA of 3"
