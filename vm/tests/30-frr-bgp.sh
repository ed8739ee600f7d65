#!/bin/sh
# FRR with kernel VRFs: VRF devices red (table 1001) and blue (table 1002), FRR's bgpd with one
# BGP instance per VRF, each peering with a BIRD neighbour in a namespace that announces the
# same PREFIXES prefixes (10.100.0.0/24, 10.100.1.0/24, ...); zebra installs them into each
# VRF's table. A host behind each VRF pings an address inside the prefixes that both
# neighbours hold: it reaches its own VRF's neighbour, never the other one.
#
# Phase 1, zebra as FRR ships it: routes on nexthop objects (nhid), which vrfd resolves: the
# control plane, the isolation and the XDP forwarding are asserted (ASSERT_NHID_XDP=0 skips the
# last, to tell a nexthop-object regression from an FRR one).
# Phase 2, `no zebra nexthop kernel enable`: zebra writes plain gateway routes, and the pings are
# forwarded by XDP (the kernel's IpForwDatagrams stays put).
. /vm/lib.sh
VRFD_UNIT=1
PREFIXES=${PREFIXES:-2000}
ASSERT_NHID_XDP=${ASSERT_NHID_XDP:-1}

# Per VRF: peer link 10.20.1.0/24 (router .1, BIRD .2), host link 10.30.1.0/24 (router .1,
# host .2): identical addressing in both.
step "VRFs red (1001) and blue (1002); BGP neighbours rp/bp, hosts rh/bh"
at_exit "ip link del red 2>/dev/null; ip link del blue 2>/dev/null"
sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
for v in "red 1001 r" "blue 1002 b"; do
    set -- $v
    ip link add "$1" type vrf table "$2" || fail "ip link add $1"
    ip link set "$1" up
    # $3-peer / $3-host: the router's ends of the links to the neighbour and the host.
    for side in "peer ${3}p 10.20.1" "host ${3}h 10.30.1"; do
        set -- $v $side
        netns "$5"
        ip link add "$3-$4" type veth peer name eth0 netns "$5" || fail "veth $3-$4"
        ip link set "$3-$4" master "$1"
        ip addr add "$6.1/24" dev "$3-$4"
        ip link set "$3-$4" up
        ip -n "$5" addr add "$6.2/24" dev eth0
        ip -n "$5" link set eth0 up
        ip -n "$5" route add default via "$6.1"
        nx "$5" ethtool -K eth0 gro on tx off >/dev/null || fail "ethtool in $5"
    done
done
ethtool -K r-host tx off >/dev/null
ethtool -K b-host tx off >/dev/null
# The address both neighbours answer for, inside the announced prefixes.
for ns in rp bp; do ip -n "$ns" addr add 10.100.7.1/32 dev lo; done

step "BIRD in rp and bp: eBGP AS 65001, $PREFIXES prefixes each"
routes=$(awk -v n="$PREFIXES" 'BEGIN { for (i = 0; i < n; i++) printf "    route 10.%d.%d.0/24 blackhole;\n", 100 + int(i / 256), i % 256 }')
for ns in rp bp; do
    mkdir -p "/run/bird-$ns"
    cat >"/run/bird-$ns/bird.conf" <<CONF
router id 10.20.1.2;
protocol device {}
protocol static announced {
    ipv4;
$routes
}
protocol bgp uplink {
    local 10.20.1.2 as 65001;
    neighbor 10.20.1.1 as 65000;
    hold time 30;
    ipv4 { import none; export all; };
}
CONF
    nx "$ns" bird -c "/run/bird-$ns/bird.conf" -s "/run/bird-$ns/ctl" -P "/run/bird-$ns/pid" ||
        fail "bird in $ns"
done
at_exit 'for ns in rp bp; do kill "$(cat /run/bird-$ns/pid)" 2>/dev/null; done'

# frr_conf [nexthop-line]: /etc/frr/frr.conf with one BGP instance per VRF.
frr_conf() {
    {
        echo "frr defaults traditional"
        echo "hostname vrf-xdp-vm"
        [ -z "$1" ] || echo "$1"
        for v in red blue; do
            printf 'vrf %s\nexit-vrf\n' "$v"
        done
        for v in red blue; do
            printf 'router bgp 65000 vrf %s\n bgp router-id 10.20.1.1\n no bgp ebgp-requires-policy\n' "$v"
            printf ' neighbor 10.20.1.2 remote-as 65001\n neighbor 10.20.1.2 timers 3 9\nexit\n'
        done
    } >/etc/frr/frr.conf
}

# table_routes TABLE: how many BGP routes the kernel has in TABLE.
table_routes() { ip route show table "$1" proto bgp | wc -l; }
bgp_converged() { [ "$(table_routes 1001)" -ge "$PREFIXES" ] && [ "$(table_routes 1002)" -ge "$PREFIXES" ]; }
bgp_instances() { vtysh -c 'show bgp vrf all summary' 2>&1 | grep -q 'BGP router identifier 10.20.1.1.*vrf-id' &&
    [ "$(vtysh -c 'show bgp vrf all summary' 2>&1 | grep -c 'BGP router identifier 10.20.1.1')" -eq 2 ]; }

# frr_up WHAT: after `systemctl start|restart frr`, both BGP instances exist. Under a loaded
# TCG guest, frrinit.sh has been seen to apply frr.conf before bgpd listened ("BGP instance
# not found" ever after): then load the integrated config once more with `vtysh -b`.
frr_up() {
    wait_for 60 bgp_instances && return 0
    echo "$1: no BGP instances 60 s after FRR started; loading frr.conf again (vtysh -b)"
    journalctl -u frr -b --no-pager -o cat | tail -n 15
    vtysh -b >/dev/null 2>&1
    wait_for 60 bgp_instances || fail "$1: no BGP instances in red and blue: $(vtysh -c 'show bgp vrf all summary' 2>&1 | tr '\n' ' ' | cut -c1-300)"
}

step "FRR (frr.service) with bgpd; zebra installs the routes"
cp /etc/frr/daemons /tmp/frr-daemons.orig
cp /etc/frr/frr.conf /tmp/frr-conf.orig 2>/dev/null
at_exit "systemctl stop frr; cp /tmp/frr-daemons.orig /etc/frr/daemons; cp /tmp/frr-conf.orig /etc/frr/frr.conf 2>/dev/null"
sed -i 's/^bgpd=no/bgpd=yes/' /etc/frr/daemons
frr_conf ""
t0=$(uptime_cs)
systemctl start frr || fail "systemctl start frr: $(journalctl -u frr -b --no-pager -o cat | tail -n 5 | tr '\n' ' ')"
frr_up "start"
wait_for 180 bgp_converged ||
    fail "after 180 s: table 1001 $(table_routes 1001), table 1002 $(table_routes 1002) BGP routes of $PREFIXES; $(vtysh -c 'show bgp vrf all summary' 2>&1 | tr '\n' ' ' | cut -c1-400)"
echo "converged in $(( ($(uptime_cs) - t0) / 100 )) s: table 1001 $(table_routes 1001), table 1002 $(table_routes 1002) BGP routes"
vtysh -c 'show bgp vrf all summary' | grep -E '^(BGP router|10\.20\.1\.2)'

step "each VRF's table points at its own neighbour"
for v in "1001 r-peer b-peer" "1002 b-peer r-peer"; do
    set -- $v
    r=$(ip route show table "$1" 10.100.7.0/24)
    echo "table $1: $r"
    echo "$r" | grep -q "via 10.20.1.2 dev $2" || fail "table $1: 10.100.7.0/24 is not via $2: $r"
    [ "$(ip route show table "$1" proto bgp | grep -c "dev $3")" -eq 0 ] || fail "table $1 has routes out of $3"
done
ip route show table main proto bgp | grep -q . && fail "BGP routes leaked into the main table"
nhid=$(ip route show table 1001 proto bgp | grep -c nhid)
echo "routes on nexthop objects in table 1001: $nhid of $(table_routes 1001)"
[ "$nhid" -ge "$PREFIXES" ] || fail "zebra did not use nexthop objects ($nhid routes with nhid)"

step "vrfd (systemd) on red and blue"
at_exit "systemctl stop vrfd 2>/dev/null"
systemctl start vrfd || fail "systemctl start vrfd: $(journalctl -u vrfd -b --no-pager | tail -n 5 | tr '\n' ' ')"
for m in r-peer r-host b-peer b-host; do has_xdp . "$m" || fail "no XDP on $m"; done
vrfctl show

# ping_vrf VRF HOST OWN OTHER: 5 pings from HOST to 10.100.7.1, all answered by OWN (the
# VRF's own neighbour), none reaching OTHER; sets FWD (the kernel's IpForwDatagrams delta).
ping_vrf() {
    nx "$2" ping -c 2 -W 2 -w 10 10.100.7.1 >/dev/null 2>&1 # neighbours resolved, routes warm
    sleep 0.5
    fwd0=$(snmp . Ip:ForwDatagrams)
    own0=$(snmp "$3" Icmp:InEchos)
    other0=$(snmp "$4" Icmp:InEchos)
    out=$(nx "$2" ping -c 5 -i 0.2 -W 2 -w 20 10.100.7.1 2>&1)
    echo "$out" | grep -q '5 packets transmitted, 5 received' || fail "$1: ping from $2: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
    FWD=$(( $(snmp . Ip:ForwDatagrams) - fwd0 ))
    own=$(( $(snmp "$3" Icmp:InEchos) - own0 ))
    other=$(( $(snmp "$4" Icmp:InEchos) - other0 ))
    echo "$1: $2 -> 10.100.7.1: $3 InEchos +$own, $4 InEchos +$other, kernel IpForwDatagrams +$FWD"
    [ "$own" -eq 5 ] || fail "$1: $3 got $own of 5 echo requests"
    [ "$other" -eq 0 ] || fail "$1: $4 (the other VRF's neighbour) got $other echo requests"
}

step "phase 1 (nexthop objects): traffic stays in its VRF"
for v in "red rh rp bp r-host" "blue bh bp rp b-host"; do
    set -- $v
    vrfctl lookup --vrf "$1" --iif "$5" 10.100.7.1 || true
    ping_vrf "$1" "$2" "$3" "$4"
    if [ "$ASSERT_NHID_XDP" = 1 ]; then
        [ "$FWD" -eq 0 ] || fail "$1: the kernel forwarded $FWD datagrams over nexthop objects (XDP should have)"
        # The per-nexthop counters saw them: a zebra nexthop object of this VRF counted >= 5.
        vrfctl stats --vrf "$1"
        vrfctl stats --vrf "$1" | awk -v vrf="$1" '$1 == "nhid" && $3 == vrf && $6 + 0 >= 5' | grep -q . ||
            fail "$1: no nexthop object of the VRF counted the 5 echo requests"
    else
        echo "$1: XDP forwarding over nexthop objects not asserted (ASSERT_NHID_XDP=0)"
    fi
done

step "phase 2: no zebra nexthop kernel enable, FRR restarted: plain gateway routes"
frr_conf "no zebra nexthop kernel enable"
systemctl restart frr || fail "systemctl restart frr"
frr_up "restart"
plain() { bgp_converged && [ "$(ip route show table 1001 proto bgp | grep -c nhid)" -eq 0 ] && [ "$(ip route show table 1002 proto bgp | grep -c nhid)" -eq 0 ]; }
wait_for 180 plain || fail "after 180 s: table 1001 $(table_routes 1001) routes ($(ip route show table 1001 proto bgp | grep -c nhid) with nhid), table 1002 $(table_routes 1002)"
ip route show table 1001 10.100.7.0/24
ready() { vrfctl lookup --vrf red --iif r-host 10.100.7.1 --json | grep -q '"oif":"r-peer"' && vrfctl lookup --vrf blue --iif b-host 10.100.7.1 --json | grep -q '"oif":"b-peer"'; }
wait_for 30 ready || fail "vrfd does not forward 10.100.7.1 in red and blue: $(vrfctl lookup --vrf red --iif r-host 10.100.7.1 --json)"
vrfctl show
for v in "red rh rp bp r-host" "blue bh bp rp b-host"; do
    set -- $v
    vrfctl lookup --vrf "$1" --iif "$5" 10.100.7.1
    ping_vrf "$1" "$2" "$3" "$4"
    [ "$FWD" -eq 0 ] || fail "$1: the kernel forwarded $FWD datagrams (XDP should have)"
done
journalctl -u vrfd -b --no-pager -o cat | grep -E ' (ERROR|WARN) ' && fail "vrfd logged errors or warnings"
true
