#!/bin/sh
# Runs inside the debootstrapped root of a test-node image (chroot), as root.
# Everything here is part of the image recipe: changing this file changes the
# recipe hash and so rebuilds the image (see h100fleet.testfleet.images).
set -eu

suite="$1"
components="$2"
mirror="$3"

# deb822 sources, the format the node_baseline role manages on real nodes.
rm -f /etc/apt/sources.list
cat > /etc/apt/sources.list.d/debian.sources <<SOURCES
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: $components
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

# Certificate authorities the build host trusts beyond Debian's bundle (copied to /usr/local/share/ca-certificates
# by the builder): the system store for apt and curl, and pip told to use it too (older pip reads only certifi).
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  update-ca-certificates >/dev/null
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > /etc/pip.conf
fi

# systemd as PID 1 in a container: units that need real hardware or a console
# can never start there, and would only keep `systemctl is-system-running` at
# "degraded".
for unit in \
    getty@tty1.service console-getty.service serial-getty@.service \
    systemd-udev-trigger.service systemd-udevd.service \
    systemd-udevd-control.socket systemd-udevd-kernel.socket \
    systemd-firstboot.service systemd-modules-load.service \
    sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
    dev-hugepages.mount proc-sys-fs-binfmt_misc.automount \
    systemd-binfmt.service systemd-remount-fs.service; do
  ln -sf /dev/null "/etc/systemd/system/$unit"
done

# A new machine-id on every container start; an empty file tells systemd so.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id

# Smaller image: the package lists come back with the first `apt-get update`.
apt-get clean
rm -rf /var/lib/apt/lists/* /var/log/*.log /var/cache/debconf/*-old
