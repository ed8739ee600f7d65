#!/bin/sh
# vrfd under systemd with the packaged unit and all of its hardening: `systemctl enable --now`
# reaches active (Type=notify: READY=1), status and journal show the startup, restart adopts
# the pins (a plain stop leaves them), a stop of the enabled unit leaves them and the dead-man switch hands
# over, reload works, and `disable --now` leaves no program, pin, tc filter or process behind.
. /vm/lib.sh
VRFD_UNIT=1

# xdp_tc_progs: the XDP and tc programs loaded in the kernel (systemd's own cgroup programs are
# neither).
xdp_tc_progs() { bpftool prog show | grep -cE '^[0-9]+: (xdp|sched_cls) '; }
main_pid() { systemctl show -p MainPID --value vrfd; }

step "a VRF in the host's own namespace: vrf-sys (table 300), member s1 with host hs behind it"
# A router forwards (vrfd passes everything to the kernel where it does not).
sysctl -qw net.ipv4.ip_forward=1
at_exit "sysctl -qw net.ipv4.ip_forward=0"
ip link add vrf-sys type vrf table 300 || fail "ip link add vrf-sys"
at_exit "ip link del vrf-sys 2>/dev/null; ip link del s1 2>/dev/null"
ip link set vrf-sys up
netns hs
ip link add s1 type veth peer name eth0 netns hs || fail "veth s1"
ip link set s1 master vrf-sys || fail "enslave s1"
ip addr add 10.40.1.1/24 dev s1
ip link set s1 up
ip -n hs addr add 10.40.1.2/24 dev eth0
ip -n hs link set eth0 up
[ "$(xdp_tc_progs)" -eq 0 ] || fail "XDP/tc programs loaded before vrfd started: $(bpftool prog show)"

step "systemctl enable --now vrfd"
at_exit "systemctl disable --now vrfd 2>/dev/null"
t0=$(uptime_cs)
systemctl enable --now vrfd || fail "systemctl enable --now vrfd: $(journalctl -u vrfd -b --no-pager | tail -n 5 | tr '\n' ' ')"
echo "enable --now returned after $(( $(uptime_cs) - t0 ))0 ms"
[ "$(systemctl is-enabled vrfd)" = enabled ] || fail "vrfd not enabled"
[ "$(systemctl show -p ActiveState --value vrfd)" = active ] || fail "vrfd is $(systemctl show -p ActiveState --value vrfd)"
[ "$(systemctl show -p SubState --value vrfd)" = running ] || fail "vrfd is $(systemctl show -p SubState --value vrfd)"
[ "$(systemctl show -p NRestarts --value vrfd)" -eq 0 ] || fail "vrfd restarted while starting"
pid=$(main_pid)
[ "$pid" -gt 0 ] || fail "no MainPID"
systemctl status vrfd --no-pager --lines=5 | tee /tmp/status.log
grep -q 'Active: active (running)' /tmp/status.log || fail "systemctl status: not active (running)"
grep -q 'ready' /tmp/status.log || fail "systemctl status shows no 'ready' line"
journalctl -u vrfd -b --no-pager -o cat | tee /tmp/journal.log
grep -q ' ready vrfs=1 members=1' /tmp/journal.log || fail "journal: no 'ready vrfs=1 members=1'"
grep -q 'Started vrfd.service\|Started vrf-xdp' /tmp/journal.log ||
    journalctl -b --no-pager -o cat | grep -q 'Started vrf-xdp' || fail "journal: systemd never logged the start"
grep -E ' (ERROR|WARN) ' /tmp/journal.log && fail "vrfd logged errors or warnings under systemd"

step "what it serves, seen from outside the unit"
has_xdp . s1 || fail "no XDP on s1"
[ -d /sys/fs/bpf/vrf-xdp ] || fail "no pins in /sys/fs/bpf/vrf-xdp"
ls /run/vrf-xdp/ | grep -q '\.lock$' || fail "no lock in /run/vrf-xdp (RuntimeDirectory=)"
vrfctl show --json | json "[(v['name'], v['table'], [m['name'] for m in v['members']]) for v in d['vrfs']]" | tee /tmp/show.log
grep -q "('vrf-sys', 300, \['s1'\])" /tmp/show.log || fail "vrfctl show: no vrf-sys (300) with s1"
local_lookup() { vrfctl lookup --vrf vrf-sys --iif s1 10.40.1.1 --json | grep -q '"reason":"local"'; }
wait_for 5 local_lookup || fail "vrfctl lookup: 10.40.1.1 not local: $(vrfctl lookup --vrf vrf-sys --iif s1 10.40.1.1 --json 2>&1) $(ip route show table 300)"
progs=$(xdp_tc_progs)
echo "XDP/tc programs loaded: $progs"
[ "$progs" -gt 0 ] || fail "bpftool lists no XDP/tc program while vrfd runs"

step "systemd-analyze security vrfd"
systemd-analyze security vrfd --no-pager | tee /tmp/security.log
grep -q 'Overall exposure level for vrfd.service' /tmp/security.log || fail "systemd-analyze security printed no verdict"

step "systemctl restart vrfd"
systemctl restart vrfd || fail "systemctl restart vrfd: $(journalctl -u vrfd -b --no-pager | tail -n 5 | tr '\n' ' ')"
[ "$(systemctl show -p ActiveState --value vrfd)" = active ] || fail "after restart: $(systemctl show -p ActiveState --value vrfd)"
pid2=$(main_pid)
[ "$pid2" != "$pid" ] || fail "restart kept MainPID $pid"
alive "$pid" && fail "the old vrfd ($pid) still runs"
has_xdp . s1 || fail "no XDP on s1 after restart"
[ "$(journalctl -u vrfd -b --no-pager -o cat | grep -c ' ready vrfs=1')" -eq 2 ] || fail "journal: not two 'ready' lines after restart"

journalctl -u vrfd -b --no-pager -o cat | grep -q 'adopting the pins of a previous vrfd' ||
    fail "the restarted vrfd did not adopt the pins"

step "systemctl stop (still enabled): everything stays for the next start; 2 s later the kernel decides"
systemctl stop vrfd || fail "systemctl stop vrfd"
has_xdp . s1 || fail "a stop of the enabled unit detached XDP (no hitless restart)"
sleep 2.5
vrfctl lookup --vrf vrf-sys --iif s1 10.40.1.1 --json | grep -q '"reason":"vrfd_gone"' ||
    fail "2.5 s after the stop the program still decides: $(vrfctl lookup --vrf vrf-sys --iif s1 10.40.1.1 --json 2>&1)"
systemctl start vrfd || fail "systemctl start vrfd after the stop"
wait_for 5 local_lookup || fail "the started vrfd did not resume: $(vrfctl lookup --vrf vrf-sys --iif s1 10.40.1.1 --json 2>&1)"

step "systemctl reload vrfd (SIGHUP): unchanged configuration, still serving"
systemctl reload vrfd || fail "systemctl reload vrfd"
wait_for 5 sh -c "journalctl -u vrfd -b --no-pager -o cat | grep -q 'SIGHUP'" || fail "journal: no SIGHUP line after reload"
[ "$(systemctl show -p ActiveState --value vrfd)" = active ] || fail "after reload: $(systemctl show -p ActiveState --value vrfd)"

step "systemctl disable --now vrfd: nothing left behind"
systemctl disable --now vrfd || fail "systemctl disable --now vrfd"
[ "$(systemctl show -p ActiveState --value vrfd)" = inactive ] || fail "after stop: $(systemctl show -p ActiveState --value vrfd)"
[ "$(systemctl show -p Result --value vrfd)" = success ] || fail "stop result: $(systemctl show -p Result --value vrfd) (exit status $(systemctl show -p ExecMainStatus --value vrfd))"
pgrep -x vrfd && fail "a vrfd process is left"
has_xdp . s1 && fail "XDP left on s1"
has_tc . s1 && fail "tc filter left on s1: $(tc filter show dev s1 egress)"
has_tc . vrf-sys && fail "tc filter left on vrf-sys"
# The root qdisc vrfd gave vrf-sys stays (--detach cannot tell it from an operator's); harmless.
[ -e /sys/fs/bpf/vrf-xdp ] && fail "pins left: $(ls /sys/fs/bpf/vrf-xdp)"
[ -e /run/vrf-xdp ] && fail "/run/vrf-xdp left behind"
[ "$(xdp_tc_progs)" -eq 0 ] || fail "XDP/tc programs still loaded: $(bpftool prog show | grep -E '^[0-9]+: (xdp|sched_cls) ')"
journalctl -u vrfd -b --no-pager -o cat | tail -n 4
true
