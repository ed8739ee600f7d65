#!/bin/sh
# The Debian package as /vm/init installed it (dpkg -i): its files where Debian puts them, the
# example configuration as a conffile, the unit known to systemd but neither enabled nor running.
. /vm/lib.sh

step "dpkg -i left vrf-xdp installed"
dpkg-query -W -f '${Status} ${Version}\n' vrf-xdp | tee /dev/stderr | grep -q '^install ok installed ' ||
    fail "vrf-xdp is not installed: $(cat /tmp/dpkg-install.log 2>/dev/null | tail -n 3)"
dpkg -L vrf-xdp >/tmp/files
for f in /usr/sbin/vrfd /usr/sbin/vrfctl /lib/systemd/system/vrfd.service /etc/vrf-xdp.toml \
    /usr/share/man/man8/vrfd.8.gz /usr/share/man/man8/vrfctl.8.gz \
    /usr/share/bash-completion/completions/vrfctl /usr/share/zsh/vendor-completions/_vrfctl \
    /usr/share/fish/vendor_completions.d/vrfctl.fish /usr/share/doc/vrf-xdp/copyright; do
    grep -qx "$f" /tmp/files || fail "$f does not belong to the package"
    [ -e "$f" ] || fail "$f missing"
done
dpkg-query -W -f '${Conffiles}\n' vrf-xdp | grep -q '^ /etc/vrf-xdp.toml [0-9a-f]' ||
    fail "/etc/vrf-xdp.toml is not a conffile: $(dpkg-query -W -f '${Conffiles}' vrf-xdp)"
dpkg-query -W -f '${Depends}\n' vrf-xdp
vrfd --version || fail "vrfd --version"
vrfctl --version || fail "vrfctl --version"
zcat /usr/share/man/man8/vrfd.8.gz | grep -q '^\.TH' || fail "vrfd.8 is no man page"

step "the unit: loaded, not enabled, not running"
systemctl cat vrfd.service | head -n 3
[ "$(systemctl show -p LoadState --value vrfd)" = loaded ] || fail "vrfd.service not loaded"
[ "$(systemctl is-enabled vrfd 2>&1)" = disabled ] || fail "vrfd.service is $(systemctl is-enabled vrfd 2>&1) after install, expected disabled"
systemctl is-active -q vrfd && fail "vrfd is running after install"
# verify also checks the units vrfd.service pulls in: only its own complaints count.
systemd-analyze verify /lib/systemd/system/vrfd.service 2>&1 | tee /tmp/verify.log
grep -q 'vrfd' /tmp/verify.log && fail "systemd-analyze verify vrfd.service: $(grep vrfd /tmp/verify.log | head -n 2 | tr '\n' ' ')"
true
