#!/bin/sh
# mmdebstrap --customize-hook for the VM image: $1 is the root file system being built.
# Makes it boot straight to the test runner on the serial console, with nothing else starting
# that the tests do not start themselves.
set -eu
root=$1

echo vrf-xdp-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 vrf-xdp-vm\n::1 localhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 rw,noatime,errors=remount-ro 0 0\n' >"$root/etc/fstab"
: >"$root/etc/machine-id"
passwd --root "$root" -d root >/dev/null

# /etc/network/interfaces: only lo; the tests write their own (ifupdown2 reads interfaces.d).
mkdir -p "$root/etc/network/interfaces.d"
printf 'source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n' >"$root/etc/network/interfaces"

# A small initramfs: the guest's disk is virtio; everything else loads from the root file system.
printf 'virtio_pci\nvirtio_blk\n' >>"$root/etc/initramfs-tools/modules"
sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
chroot "$root" update-initramfs -u -k all >/dev/null

# Drivers udev would load for the emulated PC that the tests never use (slow to load under TCG).
printf 'blacklist %s\n' kvm kvm_amd kvm_intel powernow_k8 ata_piix floppy pcspkr serio_raw \
    sr_mod cdrom joydev >"$root/etc/modprobe.d/vrf-xdp-vm.conf"

# Daemons the tests start themselves (networking.service: the tests run `ifup -a`), and what
# would only add noise or time to a boot.
for unit in networking.service frr.service bird.service openvpn.service apt-daily.timer apt-daily-upgrade.timer \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer dpkg-db-backup.timer logrotate.timer man-db.timer \
    systemd-pstore.service remote-fs.target; do
    if [ -e "$root/lib/systemd/system/$unit" ]; then
        systemctl --root="$root" disable "$unit" >/dev/null 2>&1 || true
    fi
done
for unit in serial-getty@ttyS0.service getty@tty1.service systemd-timesyncd.service \
    systemd-networkd-wait-online.service; do
    systemctl --root="$root" mask "$unit" >/dev/null 2>&1
done

# The test runner: reads the lane's payload (a tar archive the host attaches as the second
# virtio disk, /dev/vdb) and runs its /vm/init, which prints VMTEST lines on ttyS0 and powers off.
cat >"$root/etc/systemd/system/vmtest.service" <<'UNIT'
[Unit]
Description=vrf-xdp VM lane: run the tests of the payload on /dev/vdb
After=multi-user.target
ConditionPathExists=/dev/vdb

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'rm -rf /vm && mkdir /vm && tar -xf /dev/vdb -C /vm && exec /bin/sh /vm/init'
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
systemctl --root="$root" enable vmtest.service >/dev/null 2>&1

# Don't ship apt's package lists and caches in the image.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
