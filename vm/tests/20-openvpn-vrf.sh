#!/bin/sh
# The seed deployment (examples/openvpn-vrf/): ifupdown2 puts eth0 into the VRF vrf_external
# (table 1023) with IPv4 and IPv6 addresses and gateways; an OpenVPN server, started by
# Debian's openvpn-server@ unit, binds its UDP socket to vrf_external (--bind-dev); vrfd runs
# from its systemd unit. A client on the far side of the gateway brings the tunnel up and pings
# through it. The server's UDP leaves through vrfd's tc program on vrf_external (the kernel's
# witness: vrf_xmit transmits none of it, the device's TX counter stays put) and arrives
# through XDP on eth0 (passed to the kernel as local: vrfctl stats). The control run without
# vrfd shows vrf_xmit counting the same traffic.
. /vm/lib.sh
VRFD_UNIT=1
EX=/vm/examples/openvpn-vrf

step "the external side: gateway ext (192.0.2.254, 2001:db8:1::fe) and client (198.51.100.2) behind it"
netns ext
netns client
ip link add eth0 type veth peer name gw0 netns ext || fail "veth eth0"
at_exit "ip link del eth0 2>/dev/null"
ip -n ext addr add 192.0.2.254/24 dev gw0
ip -n ext addr add 2001:db8:1::fe/64 dev gw0 nodad
ip -n ext link set gw0 up
ip -n ext link add c0 type veth peer name eth0 netns client || fail "veth c0"
ip -n ext addr add 198.51.100.1/24 dev c0
ip -n ext addr add 2001:db8:ff::1/64 dev c0 nodad
ip -n ext link set c0 up
nx ext sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 || fail "forwarding in ext"
ip -n client addr add 198.51.100.2/24 dev eth0
ip -n client addr add 2001:db8:ff::2/64 dev eth0 nodad
ip -n client link set eth0 up
ip -n client route add default via 198.51.100.1
ip -n client -6 route add default via 2001:db8:ff::1
for d in "ext gw0" "ext c0" "client eth0"; do
    set -- $d
    nx "$1" ethtool -K "$2" gro on tx off >/dev/null || fail "ethtool -K $2 in $1"
done
ethtool -K eth0 tx off >/dev/null

# The example's sysctl.conf: the VPN server routes.
sysctl -q -p "$EX/sysctl.conf" || fail "sysctl -p $EX/sysctl.conf"
at_exit "sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0"

step "ifupdown2: the example's /etc/network/interfaces, ifup -a"
cp /etc/network/interfaces /tmp/interfaces.orig
at_exit "cp /tmp/interfaces.orig /etc/network/interfaces"
cp "$EX/interfaces" /etc/network/interfaces
at_exit "ifdown -a -X eth0 >/dev/null 2>&1; ifdown vrf_external >/dev/null 2>&1; ip link del vrf_external 2>/dev/null"
# networking.service creates ifupdown2's lock directory at boot; the image leaves the service off.
mkdir -p /run/network
ifup -a || fail "ifup -a"
ip -d link show dev vrf_external | tee /dev/stderr | grep -q 'vrf table 1023' || fail "vrf_external is no VRF device with table 1023"
ip link show dev eth0 | grep -q 'master vrf_external' || fail "eth0 is not in vrf_external"
ip route show vrf vrf_external | tee /tmp/routes4 | grep -q '^default via 192.0.2.254 dev eth0' || fail "no IPv4 default via 192.0.2.254 in vrf_external: $(cat /tmp/routes4)"
ip -6 route show vrf vrf_external | tee /tmp/routes6 | grep -q '^default via 2001:db8:1::fe dev eth0' || fail "no IPv6 default via 2001:db8:1::fe in vrf_external: $(cat /tmp/routes6)"
ip route show table main | grep -q 'default via 192.0.2.254' && fail "the VRF's gateway leaked into the main table"
cat /tmp/routes4 /tmp/routes6
ip rule show
wait_for 10 sh -c '[ -z "$(ip -6 addr show dev eth0 tentative)" ]' || fail "IPv6 addresses of eth0 still tentative"
nx . ping -c 2 -W 2 -I vrf_external 198.51.100.2 >/dev/null || fail "ping -I vrf_external 198.51.100.2 (via the IPv4 gateway)"
nx . ping -6 -c 2 -W 2 -I vrf_external 2001:db8:ff::2 >/dev/null || fail "ping -6 -I vrf_external 2001:db8:ff::2 (via the IPv6 gateway)"
ping -c 1 -W 1 198.51.100.2 >/dev/null 2>&1 && fail "198.51.100.2 reachable outside the VRF"

step "vrfd from its unit serves vrf_external"
at_exit "systemctl stop vrfd 2>/dev/null"
systemctl start vrfd || fail "systemctl start vrfd: $(journalctl -u vrfd -b --no-pager | tail -n 5 | tr '\n' ' ')"
has_xdp . eth0 || fail "no XDP on eth0"
vrfctl show --json | json "[(v['name'], v['table'], [m['name'] for m in v['members']]) for v in d['vrfs']]" | tee /tmp/show.log
grep -q "('vrf_external', 1023, \['eth0'\])" /tmp/show.log || fail "vrfctl show: no vrf_external (1023) with eth0"
has_tc . vrf_external || fail "no tc program on vrf_external"

step "a throwaway PKI; the OpenVPN server from the example, by openvpn-server@vrf-external"
pki=/tmp/pki
mkdir -p $pki /tmp/ovpn-client
cd $pki || fail "cd $pki"
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
# shellcheck disable=SC2086
openssl req -x509 $ec -keyout ca.key -out ca.crt -days 2 -subj /CN=vm-ca 2>/dev/null || fail "CA"
for who in server client; do
    # shellcheck disable=SC2086
    openssl req $ec -keyout $who.key -out $who.csr -subj /CN=$who 2>/dev/null || fail "$who key"
    usage=serverAuth
    [ $who = client ] && usage=clientAuth
    printf 'extendedKeyUsage=%s\nkeyUsage=digitalSignature\n' $usage >$who.ext
    openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile $who.ext -out $who.crt 2>/dev/null || fail "$who certificate"
done
cd / || fail "cd /"
install -m 0600 $pki/server.key /etc/openvpn/server/server.key
install -m 0644 $pki/ca.crt $pki/server.crt /etc/openvpn/server/
install -m 0644 "$EX/vrf-external.conf" /etc/openvpn/server/vrf-external.conf
at_exit "systemctl stop openvpn-server@vrf-external 2>/dev/null; rm -f /etc/openvpn/server/vrf-external.conf"
systemctl start openvpn-server@vrf-external ||
    fail "openvpn-server@vrf-external: $(journalctl -u openvpn-server@vrf-external -b --no-pager -o cat | tail -n 5 | tr '\n' ' ')"
ss -ulnp | tee /tmp/ss.log | grep -q '192.0.2.1%vrf_external:1194' || fail "no UDP socket 192.0.2.1%vrf_external:1194: $(grep 1194 /tmp/ss.log)"

step "the client, in its namespace, brings the tunnel up"
cp $pki/ca.crt $pki/client.crt $pki/client.key "$EX/client.conf" /tmp/ovpn-client/
nx client openvpn --cd /tmp/ovpn-client --config client.conf --daemon ovpn-client \
    --log /tmp/ovpn-client.log --writepid /tmp/ovpn-client.pid || fail "client openvpn"
at_exit 'kill "$(cat /tmp/ovpn-client.pid)" 2>/dev/null'
wait_for 90 sh -c 'ip -n client -4 addr show dev tun0 | grep -q "inet 10.8.0."' ||
    fail "no tunnel within 90 s: client: $(tail -n 3 /tmp/ovpn-client.log | tr '\n' ' ') server: $(journalctl -u openvpn-server@vrf-external -b --no-pager -o cat | tail -n 3 | tr '\n' ' ')"
grep -q 'Initialization Sequence Completed' /tmp/ovpn-client.log || wait_for 10 grep -q 'Initialization Sequence Completed' /tmp/ovpn-client.log ||
    fail "client: no 'Initialization Sequence Completed'"
ip -n client -4 addr show dev tun0 | grep inet
ip -4 addr show dev tun0 | grep -q 'inet 10.8.0.1/24' || fail "server's tun0 has no 10.8.0.1/24"
ip route get 10.8.0.2 | grep -q 'dev tun0' || fail "the tunnel's inside is not in the main table"

# tunnel_pings N: N pings from the client through the tunnel to the server's inside address,
# all answered; sets VRF_TX (vrf_external TX delta), ETH_TX (eth0 TX delta), TUN_RX.
tunnel_pings() {
    vrf0=$(tx_packets . vrf_external)
    eth0=$(tx_packets . eth0)
    tun0=$(rx_packets . tun0)
    out=$(nx client ping -c "$1" -i 0.2 -W 2 -w 60 10.8.0.1 2>&1)
    echo "$out" | grep -q "$1 packets transmitted, $1 received" || fail "ping through the tunnel: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
    VRF_TX=$(( $(tx_packets . vrf_external) - vrf0 ))
    ETH_TX=$(( $(tx_packets . eth0) - eth0 ))
    TUN_RX=$(( $(rx_packets . tun0) - tun0 ))
    echo "$1 pings through the tunnel: vrf_external TX +$VRF_TX, eth0 TX +$ETH_TX, tun0 RX +$TUN_RX"
}

# stat EXPR: EXPR over `v`, vrf_external's entry in `vrfctl stats --vrf vrf_external --json`.
stat() { vrfctl stats --vrf vrf_external --json | json "(lambda v: $1)(d['vrfs'][0])"; }

step "traffic across the tunnel: out through the tc fast path, in through XDP"
sleep 1
eg0=$(stat "v.get('directions', {}).get('vrf_egress', {}).get('forwarded_packets', 0)")
loc0=$(stat "v['reasons']['local']")
tunnel_pings 20
eg=$(( $(stat "v.get('directions', {}).get('vrf_egress', {}).get('forwarded_packets', 0)") - eg0 ))
loc=$(( $(stat "v['reasons']['local']") - loc0 ))
echo "vrfctl stats vrf_external: vrf_egress forwarded +$eg, ingress passed as local +$loc"
vrfctl stats --vrf vrf_external
[ "$TUN_RX" -ge 20 ] || fail "tun0 received $TUN_RX of the 20 echo requests"
[ "$ETH_TX" -ge 20 ] || fail "eth0 sent only $ETH_TX packets for 20 replies"
[ "$VRF_TX" -eq 0 ] || fail "vrf_xmit transmitted $VRF_TX packets: the server's UDP did not take the tc fast path"
[ "$eg" -ge 20 ] || fail "vrfd's tc program forwarded only $eg packets of vrf_external's egress"
[ "$loc" -ge 20 ] || fail "vrfd's XDP program saw only $loc packets for this host on eth0"
journalctl -u vrfd -b --no-pager -o cat | grep -E ' (ERROR|WARN) ' && fail "vrfd logged errors or warnings"

step "control: vrfd stopped, a root qdisc on vrf_external, vrf_xmit carries the tunnel"
systemctl stop vrfd || fail "systemctl stop vrfd"
has_xdp . eth0 && fail "XDP left on eth0"
# replace: vrfd --detach leaves the root qdisc vrfd put there (it cannot tell it from an operator's).
tc qdisc replace dev vrf_external root pfifo_fast || fail "tc qdisc replace dev vrf_external root pfifo_fast"
at_exit "tc qdisc del dev vrf_external root 2>/dev/null"
tunnel_pings 10
[ "$VRF_TX" -ge 10 ] || fail "the witness does not work: vrf_xmit counted $VRF_TX of 10 replies"
true
