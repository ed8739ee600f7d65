#!/bin/sh
# `vrfctl capture` on the 6.1 kernel with real VRFs: the programs with capture compiled in load
# (vrfd starts), a capture of vrf-red records the pings XDP forwarded there with their decision,
# none of vrf-blue's to the same addresses; a capture writes pcapng, and one killed with SIGKILL
# gives way to the next once its lease ends. (Only forwards are counted: IPv6 autoconfiguration
# of the hosts would otherwise take part of --count.)
. /vm/lib.sh

step "vrf-red (110) and vrf-blue (120), both 10.0.1.0/24 + 10.0.2.0/24"
identical_vrfs
vrfd_start
has_xdp router red1 || fail "no XDP on red1"

step "capture vrf-red during pings in both VRFs: 3 requests and 3 replies, all red, all forwarded"
CAP_OUT=/tmp/capture.out
CAP_ERR=/tmp/capture.err
nsenter --net=/run/netns/router vrfctl --pin-path "$PIN" capture --vrf vrf-red --reason forward --rate 0 --count 6 \
    >"$CAP_OUT" 2>"$CAP_ERR" &
CAP_PID=$!
at_exit "kill -KILL $CAP_PID 2>/dev/null"
wait_for 10 grep -q capturing "$CAP_ERR" || fail "capture did not start: $(cat "$CAP_ERR")"
out=$(nx ba ping -c 3 -W 2 -w 15 10.0.2.2 2>&1)
echo "$out" | grep -Eq ', 3 (packets )?received' || fail "blue ping: $(echo "$out" | tail -n 1)"
out=$(nx ra ping -c 3 -W 2 -w 15 10.0.2.2 2>&1)
echo "$out" | grep -Eq ', 3 (packets )?received' || fail "red ping: $(echo "$out" | tail -n 1)"
wait_for 10 dead "$CAP_PID" || fail "capture still running after 6 packets: $(cat "$CAP_OUT" "$CAP_ERR")"
cat "$CAP_OUT" "$CAP_ERR"
[ "$(grep -c 'ICMP echo request.*| vrf-red forwarded out red2' "$CAP_OUT")" -eq 3 ] ||
    fail "expected 3 echo requests forwarded out red2: $(cat "$CAP_OUT")"
[ "$(grep -c 'ICMP echo reply.*| vrf-red forwarded out red1' "$CAP_OUT")" -eq 3 ] ||
    fail "expected 3 echo replies forwarded out red1: $(cat "$CAP_OUT")"
grep -q blue "$CAP_OUT" && fail "vrf-blue's packets in a capture of vrf-red: $(cat "$CAP_OUT")"
grep -q '^6 packets captured' "$CAP_ERR" || fail "capture summary: $(cat "$CAP_ERR")"

step "a capture to pcapng, killed with SIGKILL: the next capture starts once its lease ends"
nsenter --net=/run/netns/router vrfctl --pin-path "$PIN" capture -w /tmp/capture.pcapng \
    >/dev/null 2>"$CAP_ERR" &
CAP_PID=$!
at_exit "kill -KILL $CAP_PID 2>/dev/null"
wait_for 10 grep -q capturing "$CAP_ERR" || fail "capture did not start: $(cat "$CAP_ERR")"
nx ra ping -c 1 -W 2 10.0.2.2 >/dev/null || fail "ping during the pcapng capture"
# pcapng's section header block starts with 0x0a0d0d0a.
wait_for 5 sh -c '[ "$(od -An -tx1 -N4 /tmp/capture.pcapng | tr -d " ")" = 0a0d0d0a ]' ||
    fail "/tmp/capture.pcapng is no pcapng file"
kill -KILL "$CAP_PID"
# A second capture is refused while the killed one's lease lasts, then allowed: the lease ended.
wait_for 10 vrfctl_r capture --reason forward --count 1 --rate 0 -w /dev/null &
NEXT=$!
nx ra ping -c 16 -i 0.5 -W 2 10.0.2.2 >/dev/null
wait "$NEXT" || fail "a new capture was refused after the killed one's lease ended"
vrfd_log_clean
