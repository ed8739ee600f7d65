# Sourced by every /vm/tests/*.sh (run by /bin/sh, Debian's dash): helpers for a router namespace
# with kernel VRF devices, host namespaces behind its members, and vrfd running in the router
# (the tests of the systemd unit and the deployments run vrfd as the package installs it).
#
# A script fails by calling `fail REASON` (prints "FAIL: REASON", which /init reports); its EXIT
# trap stops vrfd and deletes its namespaces.

PIN=/sys/fs/bpf/vrf-xdp
VRFD_LOG=/tmp/vrfd.log
VRFD_PID=
NAMESPACES=

step() { echo "== $*"; }

# VRFD_UNIT=1: the script runs vrfd through systemd (its log is the journal).
VRFD_UNIT=

fail() {
    echo "FAIL: $*"
    if [ -n "$VRFD_UNIT" ]; then
        echo "-- journalctl -u vrfd (last 40 lines):"
        journalctl -u vrfd -b --no-pager -o cat | tail -n 40
    elif [ -s "$VRFD_LOG" ]; then
        echo "-- vrfd log (last 40 lines):"
        tail -n 40 "$VRFD_LOG"
    fi
    exit 1
}

# at_exit CMD: run CMD (a shell line) when the script exits, before the namespaces go; the
# last registered runs first.
AT_EXIT=
at_exit() { AT_EXIT="$*
$AT_EXIT"; }

cleanup() {
    eval "$AT_EXIT"
    if [ -n "$VRFD_PID" ]; then
        kill -TERM "$VRFD_PID" 2>/dev/null && wait "$VRFD_PID"
    fi
    # A stopped vrfd leaves its links and pins for the next one: the next script must not
    # find them (its interfaces may reuse these ifindexes).
    if [ -e "$PIN" ]; then
        if [ -e /run/netns/router ]; then
            nx router vrfd --detach --pin-path "$PIN" >/dev/null 2>&1
        else
            vrfd --detach --pin-path "$PIN" >/dev/null 2>&1
        fi
    fi
    for ns in $NAMESPACES; do
        ip netns del "$ns" 2>/dev/null
    done
}
trap cleanup EXIT

# nx NS CMD...: CMD in namespace NS's network namespace only (the mount namespace, and so the
# bpffs pins, stay shared; `ip netns exec` would remount /sys). NS "." is the host's own.
nx() {
    _ns=$1
    shift
    if [ "$_ns" = . ]; then
        "$@"
    else
        nsenter --net="/run/netns/$_ns" "$@"
    fi
}

# ipn NS ARGS...: `ip -n NS ARGS`, or plain `ip ARGS` for NS ".".
ipn() {
    _ns=$1
    shift
    if [ "$_ns" = . ]; then ip "$@"; else ip -n "$_ns" "$@"; fi
}

# json EXPR: EXPR (Python, over the JSON document `d` read from stdin), printed.
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

netns() {
    ip netns add "$1" || fail "ip netns add $1"
    NAMESPACES="$1 $NAMESPACES"
    ip -n "$1" link set lo up
}

# The router namespace: forwarding on, reverse-path filter off.
router() {
    netns router
    nx router sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
        net.ipv4.conf.default.rp_filter=0 >/dev/null || fail "router sysctls"
}

# vrf NAME TABLE: a VRF device in the router.
vrf() {
    ip -n router link add "$1" type vrf table "$2" || fail "ip link add $1 type vrf table $2"
    ip -n router link set "$1" up || fail "ip link set $1 up"
}

mac() { ip -n "$1" link show dev "$2" | awk '/link\/ether/ { print $2 }'; }

# host MEMBER HOSTNS ROUTER_CIDR HOST_CIDR: veth MEMBER in the router, eth0 in a new namespace
# HOSTNS with a default route via the router; GRO on and TX checksum offload off on eth0 (what
# veth needs to receive XDP-redirected frames, and for TCP/UDP checksums to survive them).
host() {
    netns "$2"
    ip -n router link add "$1" type veth peer name eth0 netns "$2" || fail "veth $1"
    ip -n router addr add "$3" dev "$1" || fail "address $3 on $1"
    ip -n router link set "$1" up || fail "ip link set $1 up"
    ip -n "$2" addr add "$4" dev eth0 || fail "address $4 in $2"
    ip -n "$2" link set eth0 up || fail "eth0 up in $2"
    ip -n "$2" route add default via "${3%/*}" || fail "default route in $2"
    nx "$2" ethtool -K eth0 gro on tx off >/dev/null || fail "ethtool -K eth0 gro on tx off in $2"
}

# neighbours MEMBER HOSTNS ROUTER_CIDR HOST_CIDR: permanent ARP entries both ways (after
# enslaving: enslaving cycles the link, which flushes its neighbours).
neighbours() {
    ip -n router neigh replace "${4%/*}" lladdr "$(mac "$2" eth0)" dev "$1" nud permanent ||
        fail "neighbour ${4%/*} on $1"
    ip -n "$2" neigh replace "${3%/*}" lladdr "$(mac router "$1")" dev eth0 nud permanent ||
        fail "neighbour ${3%/*} in $2"
}

enslave() { ip -n router link set "$1" master "$2" || fail "ip link set $1 master $2"; }

# Centiseconds since boot.
uptime_cs() { awk '{ printf "%d\n", $1 * 100 }' /proc/uptime; }

# wait_for SECS CMD...: true as soon as CMD succeeds, false once SECS have passed.
wait_for() {
    _limit=$(( $(uptime_cs) + $1 * 100 ))
    shift
    while :; do
        "$@" >/dev/null 2>&1 && return 0
        [ "$(uptime_cs)" -ge "$_limit" ] && return 1
        sleep 0.05
    done
}

# Process PID exists and is not a zombie.
alive() { grep -q '^State:[[:space:]]*[^Z[:space:]]' "/proc/$1/status" 2>/dev/null; }
dead() { ! alive "$1"; }

# has_xdp NS DEV: an XDP program is attached to DEV (native or generic).
has_xdp() { ipn "$1" -d link show dev "$2" | grep -q 'prog/xdp'; }
no_xdp() { ipn "$1" link show dev "$2" >/dev/null 2>&1 && ! has_xdp "$1" "$2"; }

# has_tc NS DEV: a tc filter (vrfd's tc programs, clsact on kernels before 6.6) on DEV.
has_tc() {
    if [ "$1" = . ]; then set -- "" "$2"; else set -- "-n $1" "$2"; fi
    # shellcheck disable=SC2086 # $1 is "-n NS" or nothing
    [ -n "$(tc $1 filter show dev "$2" egress 2>/dev/null; tc $1 filter show dev "$2" ingress 2>/dev/null)" ]
}

# tx_packets NS DEV: the kernel's TX packet counter of DEV (for a VRF device: what vrf_xmit sent).
tx_packets() { ipn "$1" -s link show dev "$2" | awk '/TX:/ { getline; print $2; exit }'; }
rx_packets() { ipn "$1" -s link show dev "$2" | awk '/RX:/ { getline; print $2; exit }'; }

# vrfd in the router namespace, without a config: it discovers the kernel's VRF devices.
# VRFD_ARGS: more arguments (e.g. --no-persist).
VRFD_ARGS=
vrfd_start() {
    : >"$VRFD_LOG"
    # Not through nx: $! must be vrfd's pid (nsenter execs it), not a subshell's.
    # shellcheck disable=SC2086 # VRFD_ARGS is a list of words
    nsenter --net=/run/netns/router vrfd --pin-path "$PIN" $VRFD_ARGS >"$VRFD_LOG" 2>&1 &
    VRFD_PID=$!
    _limit=$(( $(uptime_cs) + 6000 ))
    until grep -q ' ready' "$VRFD_LOG"; do
        alive "$VRFD_PID" || fail "vrfd exited before it was ready: $(vrfd_error)"
        [ "$(uptime_cs)" -lt "$_limit" ] || fail "vrfd not ready within 60 s"
        sleep 0.1
    done
    echo "vrfd ready: $(grep ' ready' "$VRFD_LOG" | head -n 1)"
}

# vrfd's first error, and the verifier's complaint (the line before "verification time") if any.
vrfd_error() {
    _err=$(grep -m1 ' ERROR ' "$VRFD_LOG" | sed 's/^.* ERROR //' | cut -c1-200)
    _verifier=$(grep -B1 '^verification time' "$VRFD_LOG" | head -n 1)
    echo "${_err:-$(tail -n 1 "$VRFD_LOG")}${_verifier:+ ... $_verifier}"
}

# vrfd_log_clean: vrfd logged no error and no warning (an attach the kernel refused, …).
vrfd_log_clean() {
    _bad=$(grep -E ' (ERROR|WARN) ' "$VRFD_LOG")
    [ -z "$_bad" ] || fail "vrfd logged: $(echo "$_bad" | head -n 3 | sed 's/^[^ ]* *//' | tr '\n' ' ' | cut -c1-600)"
}

vrfctl_r() { nx router vrfctl --pin-path "$PIN" "$@"; }

# lookup_is VRF IIF ADDR ACTION [REASON [OIF]]: `vrfctl lookup --json` of a packet to ADDR arriving
# on IIF says ACTION (forward, pass, drop), and REASON and OIF when given. Prints the answer.
lookup_is() {
    _out=$(vrfctl_r lookup --vrf "$1" --iif "$2" "$3" --json 2>&1) || { echo "$_out"; return 1; }
    echo "$_out"
    echo "$_out" | grep -q "\"action\":\"$4\"" || return 1
    [ -z "$5" ] || echo "$_out" | grep -q "\"reason\":\"$5\"" || return 1
    [ -z "$6" ] || echo "$_out" | grep -q "\"oif\":\"$6\"" || return 1
}

# One line per VRF in `vrfctl show --json`, whatever the order of the keys:
#   <name> table=<n> kind=<device|declared> routes4=<n> routes6=<n> neighbours=<n> degraded=<b> members=<a,b>
vrfs() {
    # A bond member's "ports" (its slaves) would end the members list early: left out here.
    vrfctl_r show --json | tr -d ' \t\n' | sed 's/,"ports":\[[^]]*\]//g' | awk '
        function field(obj, key,   v) {
            if (!match(obj, "\"" key "\":(\"[^\"]*\"|[^,}]*)")) return "?"
            v = substr(obj, RSTART + length(key) + 3, RLENGTH - length(key) - 3)
            gsub(/"/, "", v)
            return v
        }
        function emit(obj,   members, list) {
            members = ""
            if (match(obj, /"members":\[[^]]*\]/)) {
                members = substr(obj, RSTART, RLENGTH)
                obj = substr(obj, 1, RSTART - 1) substr(obj, RSTART + RLENGTH)
            }
            list = ""
            while (match(members, /"name":"[^"]*"/)) {
                list = list (list == "" ? "" : ",") substr(members, RSTART + 8, RLENGTH - 9)
                members = substr(members, RSTART + RLENGTH)
            }
            print field(obj, "name"), "table=" field(obj, "table"), "kind=" field(obj, "kind"),
                "routes4=" field(obj, "routes4"), "routes6=" field(obj, "routes6"),
                "neighbours=" field(obj, "neighbours"), "degraded=" field(obj, "degraded"),
                "members=" list
        }
        {
            s = $0
            sub(/^\{"vrfs":\[/, "", s)
            depth = 0
            start = 1
            for (i = 1; i <= length(s); i++) {
                c = substr(s, i, 1)
                if (c == "{" || c == "[") depth++
                else if (c == "}" || c == "]") {
                    depth--
                    if (depth == 0) { emit(substr(s, start, i - start + 1)); start = i + 2 }
                }
            }
        }'
}

# vrf_line NAME: NAME's line from `vrfs` (fails when there is none).
vrf_line() { vrfs | grep "^$1 "; }

# member_of VRF TABLE MEMBER: `vrfctl show` lists VRF with table TABLE and MEMBER among its members.
member_of() {
    _line=$(vrf_line "$1") || return 1
    echo " $_line " | grep -q " table=$2 " || return 1
    echo "${_line##*members=}" | tr ',' '\n' | grep -qx "$3"
}
not_member_of() { ! member_of "$@"; }

# vrf_gone NAME: vrfctl answers, and lists no VRF named NAME.
vrf_gone() { _all=$(vrfs) && ! echo "$_all" | grep -q "^$1 "; }

# A counter from /proc/net/snmp in a namespace: snmp NS Ip:ForwDatagrams
snmp() {
    nx "$1" cat /proc/net/snmp | awk -v want="$2" '
        $1 == table { for (i = 2; i <= NF; i++) if ($1 head[i] == want) print $i; table = ""; next }
        { table = $1; for (i = 2; i <= NF; i++) head[i] = $i }'
}

# ping_in WHAT SRCNS ADDR DSTNS OTHERNS KERNEL: 3 pings from SRCNS to ADDR, all answered, all
# received by DSTNS and none by OTHERNS ("-": no other); KERNEL=0: none forwarded by the
# router's kernel (XDP did), KERNEL=1: the kernel forwarded at least the requests.
ping_in() {
    fwd0=$(snmp router Ip:ForwDatagrams)
    dst0=$(snmp "$4" Icmp:InEchos)
    other0=0
    [ "$5" = - ] || other0=$(snmp "$5" Icmp:InEchos)
    out=$(nx "$2" ping -c 3 -W 2 -w 15 "$3" 2>&1)
    echo "$out"
    echo "$out" | grep -Eq ', 3 (packets )?received' || fail "$1: ping $2 -> $3: $(echo "$out" | tail -n 1)"
    fwd=$(( $(snmp router Ip:ForwDatagrams) - fwd0 ))
    dst=$(( $(snmp "$4" Icmp:InEchos) - dst0 ))
    other=0
    [ "$5" = - ] || other=$(( $(snmp "$5" Icmp:InEchos) - other0 ))
    echo "$1: router IpForwDatagrams +$fwd, $4 InEchos +$dst, $5 InEchos +$other"
    if [ "$6" = 0 ]; then
        [ "$fwd" -eq 0 ] || fail "$1: the kernel forwarded $fwd datagrams (XDP should have)"
    else
        [ "$fwd" -ge 3 ] || fail "$1: the kernel forwarded only $fwd datagrams"
    fi
    [ "$dst" -eq 3 ] || fail "$1: $4 got $dst echo requests, expected 3"
    [ "$other" -eq 0 ] || fail "$1: $5 (other VRF) got $other echo requests"
}

# vrfd_stop: SIGTERM, and vrfd must exit 0 (it leaves its programs and pins for the next vrfd
# unless started with VRFD_ARGS=--no-persist).
vrfd_stop() {
    kill -TERM "$VRFD_PID" || fail "kill vrfd"
    wait "$VRFD_PID"
    _rc=$?
    VRFD_PID=
    [ "$_rc" -eq 0 ] || fail "vrfd exited $_rc on SIGTERM"
}

# bond_in_vrf VRF X...: bond0 (active-backup, miimon 100) in VRF, 10.0.3.1/24, over veths sX
# whose peers eX make up bond0 of host namespace bh (10.0.3.2/24, default route via the router).
bond_in_vrf() {
    _vrf=$1
    shift
    netns bh
    ip -n router link add bond0 type bond mode active-backup miimon 100 || fail "bond0"
    ip -n bh link add bond0 type bond mode active-backup miimon 100 || fail "bond0 in bh"
    for _s in "$@"; do
        bond_slave_pair "$_s"
        bond_join "$_s"
    done
    enslave bond0 "$_vrf"
    ip -n router addr add 10.0.3.1/24 dev bond0 || fail "address on bond0"
    ip -n router link set bond0 up || fail "bond0 up"
    ip -n bh addr add 10.0.3.2/24 dev bond0 || fail "address in bh"
    ip -n bh link set bond0 up || fail "bond0 up in bh"
    ip -n bh route add default via 10.0.3.1 || fail "default route in bh"
    bond_neighbours
}

# bond_slave_pair X: veth sX in the router, eX in bh (GRO on to take redirected frames, TX
# offload off).
bond_slave_pair() {
    ip -n router link add "s$1" type veth peer name "e$1" netns bh || fail "veth s$1"
    nx bh ethtool -K "e$1" gro on tx off >/dev/null || fail "ethtool -K e$1"
    nx router ethtool -K "s$1" gro on tx off >/dev/null || fail "ethtool -K s$1"
}

# bond_join X / bond_leave X: sX into (out of) bond0, and eX into (out of) bh's bond0 alike.
bond_join() {
    ip -n router link set "s$1" master bond0 || fail "s$1 into bond0"
    ip -n bh link set "e$1" master bond0 || fail "e$1 into bond0 in bh"
}
bond_leave() {
    ip -n router link set "s$1" nomaster || fail "s$1 out of bond0"
    ip -n bh link set "e$1" nomaster || fail "e$1 out of bond0 in bh"
}

# bond_neighbours: permanent ARP entries both ways over bond0 (enslaving flushes them).
bond_neighbours() {
    wait_for 10 sh -c "ip -n router link show dev bond0 | grep -q LOWER_UP" || fail "bond0 has no carrier"
    ip -n router neigh replace 10.0.3.2 lladdr "$(mac bh bond0)" dev bond0 nud permanent ||
        fail "neighbour on bond0"
    ip -n bh neigh replace 10.0.3.1 lladdr "$(mac router bond0)" dev bond0 nud permanent ||
        fail "neighbour in bh"
}

# identical_vrfs: the router with vrf-red (110) and vrf-blue (120), each with members X1
# (10.0.1.1/24) and X2 (10.0.2.1/24) and a host behind each (ra, rb, ba, bb at .2), the same
# addresses in both VRFs; permanent neighbours both ways.
identical_vrfs() {
    router
    vrf vrf-red 110
    vrf vrf-blue 120
    for _m in "red1 ra 1 vrf-red" "red2 rb 2 vrf-red" "blue1 ba 1 vrf-blue" "blue2 bb 2 vrf-blue"; do
        # shellcheck disable=SC2086 # four words: member, host namespace, subnet, VRF
        set -- $_m
        host "$1" "$2" "10.0.$3.1/24" "10.0.$3.2/24"
        enslave "$1" "$4"
        neighbours "$1" "$2" "10.0.$3.1/24" "10.0.$3.2/24"
    done
}
