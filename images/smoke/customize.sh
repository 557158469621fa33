#!/bin/sh
# mmdebstrap --customize-hook of images/smoke.sh: turns the Debian 12 arm64 root file system
# in $1 into the smoke-test guest. Runs on the host, as root, with /proc, /sys and /dev mounted
# in $1 by mmdebstrap; commands for the target run in it through chroot (qemu-user-static).
# SMOKE_WORK is the work directory (artifact/, demo-call.s16, the key), SMOKE_DIR this folder.
set -eu

root=$1
: "${SMOKE_WORK:?}" "${SMOKE_DIR:?}"

# 1. The install artifact, applied inside the target the way an image build does
#    (images/README.md, "In an image build"). pip inside the chroot reaches PyPI with the
#    host's CA bundle, given for this command only: the guest keeps Debian's own.
mkdir -p "$root/tmp/edge-recorder"
cp -r "$SMOKE_WORK/artifact/." "$root/tmp/edge-recorder/"
cp /etc/ssl/certs/ca-certificates.crt "$root/tmp/edge-recorder/host-ca.pem"
wheel=$(cd "$SMOKE_WORK/artifact/dist" && echo edge_recorder-*.whl)
chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    PIP_CERT=/tmp/edge-recorder/host-ca.pem PIP_DEFAULT_TIMEOUT=180 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    /tmp/edge-recorder/images/install.sh --wheel "/tmp/edge-recorder/dist/$wheel"
rm -rf "$root/tmp/edge-recorder"

# 2. The line: ALSA's file plugin plays the demo call, paced by the loopback sound card.
install -D -m 0644 "$SMOKE_DIR/asound.conf" "$root/etc/asound.conf"
install -D -m 0644 "$SMOKE_WORK/demo-call.s16" "$root/usr/local/share/edge-recorder-smoke/demo-call.s16"
echo snd-aloop >"$root/etc/modules-load.d/snd-aloop.conf"

# 3. The disks: /dev/vda the root file system, /dev/vdb the FAT boot partition.
mkdir -p "$root/boot/firmware"
cat >"$root/etc/fstab" <<'EOF'
/dev/vda  /              ext4  rw,errors=remount-ro  0  1
/dev/vdb  /boot/firmware vfat  defaults              0  2
EOF
echo edge-smoke >"$root/etc/hostname"

# 4. The checks, started once the system is up.
install -D -m 0755 "$SMOKE_DIR/check.sh" "$root/usr/local/sbin/edge-recorder-smoke-check"
install -D -m 0644 "$SMOKE_DIR/edge-recorder-smoke.service" \
    "$root/etc/systemd/system/edge-recorder-smoke.service"
systemctl --root="$root" enable edge-recorder-smoke.service

# 5. A small initramfs (MODULES=list, set before the kernel was installed): only what mounts
#    the root file system. With Debian's default (MODULES=most) building it under
#    qemu-user-static takes over 10 minutes.
printf '%s\n' virtio_pci virtio_blk ext4 >>"$root/etc/initramfs-tools/modules"
chroot "$root" update-initramfs -u -k all
