#!/bin/sh
# SIGTERM: vrfd exits 0 and leaves everything for the next vrfd (XDP on every member, the tc
# filters, the pins); 2 s later the dead-man switch has the kernel deciding (the program says
# vrfd_gone). `vrfd --detach` then removes programs, filters and pins, and the ip rules are as
# they were. With --no-persist, SIGTERM itself removes everything.
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

stop_vrfd() {
    kill -TERM "$VRFD_PID"
    wait_for 20 dead "$VRFD_PID" || fail "vrfd still running 20 s after SIGTERM"
    wait "$VRFD_PID"
    rc=$?
    VRFD_PID=
    tail -n 2 "$VRFD_LOG"
    [ "$rc" -eq 0 ] || fail "vrfd exited with status $rc after SIGTERM"
    vrfd_log_clean
}

nothing_left() {
    for dev in r1 b1 vrf-red vrf-blue; do
        has_xdp router "$dev" && fail "$1: XDP still on $dev"
        has_tc router "$dev" && fail "$1: tc filter still on $dev: $(tc -n router filter show dev "$dev" egress)"
    done
    [ -e "$PIN" ] && fail "$1: pins left behind: $(ls "$PIN")"
    rules_after=$(ip -n router rule show; ip -n router -6 rule show)
    [ "$rules_before" = "$rules_after" ] || fail "$1: ip rules changed: before [$rules_before] after [$rules_after]"
}

step "SIGTERM: everything stays for the next vrfd"
stop_vrfd
has_xdp router r1 || fail "SIGTERM detached XDP from r1"
has_xdp router b1 || fail "SIGTERM detached XDP from b1"
[ -d "$PIN/links" ] || fail "SIGTERM removed the pinned links"
sleep 2.5
lookup_is vrf-red r1 10.3.1.2 pass vrfd_gone || fail "2.5 s after SIGTERM the program still decides"

step "vrfd --detach: nothing of vrf-xdp left"
nx router vrfd --detach --pin-path "$PIN" || fail "vrfd --detach"
nothing_left "after --detach"

step "vrfd --no-persist: SIGTERM removes everything itself"
VRFD_ARGS=--no-persist
vrfd_start
VRFD_ARGS=
has_xdp router r1 || fail "no XDP on r1"
stop_vrfd
nothing_left "after SIGTERM of vrfd --no-persist"
true
