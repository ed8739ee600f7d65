#!/bin/sh
# A kernel VRF device with two members: the kernel moves their local and connected routes into
# the VRF's table on enslavement; vrfd, with no config, finds the VRF and its members, attaches
# to them, mirrors the table, and `vrfctl lookup` forwards to a connected host.
. /vm/lib.sh

step "vrf-red (table 110) with members r1, r2 and hosts h1, h2"
router
vrf vrf-red 110
host r1 h1 10.1.1.1/24 10.1.1.2/24
host r2 h2 10.1.2.1/24 10.1.2.2/24
# The addresses are there before enslaving: the kernel moves their routes.
ip -n router route show table main | grep -q '^10.1.1.0/24 dev r1' || fail "no connected route in main before enslaving"
enslave r1 vrf-red
enslave r2 vrf-red
neighbours r1 h1 10.1.1.1/24 10.1.1.2/24
neighbours r2 h2 10.1.2.1/24 10.1.2.2/24

step "routes moved into table 110"
t110=$(ip -n router route show table 110)
echo "$t110"
echo "$t110" | grep -q '^10.1.1.0/24 dev r1 proto kernel scope link src 10.1.1.1' || fail "connected route of r1 not in table 110"
echo "$t110" | grep -q '^10.1.2.0/24 dev r2 proto kernel scope link src 10.1.2.1' || fail "connected route of r2 not in table 110"
echo "$t110" | grep -q '^local 10.1.1.1 dev r1 proto kernel scope host src 10.1.1.1' || fail "local route of r1 not in table 110"
echo "$t110" | grep -q '^local 10.1.2.1 dev r2 proto kernel scope host src 10.1.2.1' || fail "local route of r2 not in table 110"
ip -n router route show table main | grep -q '10.1.1.0/24' && fail "connected route of r1 still in table main"
ip -n router route show table local | grep -q ' 10.1.1.1 ' && fail "local route of r1 still in table local"
ip -n router rule show | grep -q 'l3mdev-table' || fail "no l3mdev rule"

step "vrfd discovers vrf-red"
vrfd_start
has_xdp router r1 || fail "no XDP on r1"
has_xdp router r2 || fail "no XDP on r2"
has_xdp router vrf-red && fail "XDP on the VRF device itself"
line=$(vrf_line vrf-red) || fail "vrfctl show --json does not list vrf-red: $(vrfctl_r show --json)"
echo "$line"
echo "$line" | grep -q ' table=110 kind=device ' || fail "vrfctl show: vrf-red is not the device with table 110: $line"
echo "$line" | grep -q ' members=r1,r2$' || fail "vrfctl show: vrf-red's members are not r1, r2: $line"
echo "$line" | grep -q ' routes4=[1-9]' || fail "vrfctl show: no IPv4 route of table 110 mirrored: $line"
echo "$line" | grep -q ' degraded=false ' || fail "vrfctl show: vrf-red degraded: $line"
[ "$(vrfs | wc -l)" -eq 1 ] || fail "vrfctl show lists more than vrf-red: $(vrfs)"

step "vrfctl lookup"
lookup_is vrf-red r2 10.1.1.2 forward forwarded r1 || fail "lookup 10.1.1.2 from r2: not forwarded out of r1"
lookup_is vrf-red r1 10.1.2.2 forward forwarded r2 || fail "lookup 10.1.2.2 from r1: not forwarded out of r2"
# The local route the kernel moved into table 110: local delivery is the kernel's.
lookup_is vrf-red r2 10.1.1.1 pass local || fail "lookup 10.1.1.1 (local in table 110): not pass/local"
vrfd_log_clean

# refused CONFIG WORDS: vrfd with CONFIG exits 2 before touching anything, naming WORDS.
refused() {
    printf '%s\n' "$1" >/tmp/refused.toml
    _out=$(nx router vrfd --pin-path /sys/fs/bpf/vrf-xdp-refused --config /tmp/refused.toml 2>&1)
    _rc=$?
    echo "$_out" | tail -n 2
    [ "$_rc" -eq 2 ] || fail "vrfd with $(tr '\n' ' ' </tmp/refused.toml) exited $_rc, not 2"
    echo "$_out" | grep -q "$2" || fail "vrfd's refusal does not say \"$2\": $_out"
    [ ! -e /sys/fs/bpf/vrf-xdp-refused ] || fail "a refused vrfd left pins"
}

step "configurations the kernel makes unsafe are refused (exit 2), the running vrfd undisturbed"
rules_before=$(ip -n router rule show)
refused '[[vrf]]
name = "vrf-red"
table = 120
interfaces = ["r9"]' "kernel VRF device of that name"
refused '[[vrf]]
name = "green"
table = 120
interfaces = ["r1"]' "r1"
[ "$(ip -n router rule show)" = "$rules_before" ] || fail "a refused vrfd changed the rules"
alive "$VRFD_PID" || fail "the running vrfd died"
lookup_is vrf-red r2 10.1.1.2 forward forwarded r1 || fail "after the refusals: lookup 10.1.1.2 from r2 not forwarded"
