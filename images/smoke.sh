#!/usr/bin/env bash
# Smoke test of the install artifact on an emulated arm64 box (images/README.md, "Smoke test").
#
#   sudo images/smoke.sh [--work DIR] [--mirror URL] [--timeout SECONDS] [--boot-only]
#
#  1. Builds the install artifact from this checkout: images/install.sh, systemd/ and a wheel.
#  2. Builds a Debian 12 arm64 root file system with mmdebstrap (Debian's packages, run under
#     qemu-user-static), with Debian's kernel and an initramfs of MODULES=list, and applies
#     the artifact inside it with install.sh, as an image build does (images/smoke/customize.sh).
#     pip in the chroot gets the host's CA bundle to reach the package index.
#  3. Puts the first-boot file (images/smoke/first-boot.toml as edge-recorder.toml, and an
#     encryption key in edge-recorder/) on a FAT boot partition.
#  4. Boots both disks under qemu-system-aarch64 -M virt (a Cortex-A72, as on a Pi 4) and reads
#     the serial console: images/smoke/check.sh in the guest checks that provisioning ran, that
#     edge-recorder.service is active and pinging its watchdog, and that the box recorded the
#     demo call it hears through ALSA's file plugin (started by *1, ended by #), encrypted.
#  5. Takes the encrypted recording out of the guest's disk (debugfs) and decrypts it with the
#     key pair made in step 1.
#
# Exit status: 0 every check passed, 1 a check failed or the guest did not finish in time
# (the console log is kept in the work directory), 64 wrong arguments, 69 a program it needs
# is missing (or arm64 binaries do not run), 77 not root.
# --boot-only boots the root file system of an earlier run again (steps 3 to 5).
set -euo pipefail
umask 022

usage() {
  sed -n '4p' "$0" | sed 's/^#//' >&2
  exit 64
}
die() {
  echo "smoke.sh: error: $1" >&2
  exit "${2:-1}"
}
say() { echo "smoke.sh: $(date +%T) $*" >&2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$repo/build/smoke mirror=http://deb.debian.org/debian timeout=1200 boot_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --work | --mirror | --timeout)
      if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value" 64; fi
      case "$1" in
        --work) work=$2 ;;
        --mirror) mirror=$2 ;;
        --timeout) timeout=$2 ;;
      esac
      shift 2
      ;;
    --boot-only) boot_only=1; shift ;;
    -h | --help) usage ;;
    *) echo "smoke.sh: error: unknown argument: $1" >&2; usage ;;
  esac
done
case "$timeout" in '' | *[!0-9]*) die "--timeout takes whole seconds, not $timeout" 64 ;; esac

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap and the root file system's owners need it)" 77
for tool in mmdebstrap:mmdebstrap qemu-system-aarch64:qemu-system-arm arch-test:arch-test \
  mkfs.ext4:e2fsprogs mkfs.vfat:dosfstools mcopy:mtools systemctl:systemd; do
  command -v "${tool%%:*}" >/dev/null || die "${tool%%:*} not found: apt-get install ${tool#*:}" 69
done
python=${PYTHON:-$repo/.venv/bin/python}
[ -x "$python" ] || die "$python not found: run ./run.sh test once (it makes .venv), or set PYTHON" 69
if ! arch-test arm64 >/dev/null 2>&1 && command -v update-binfmts >/dev/null; then
  # A machine without systemd's binfmt_misc automount (a container, a chroot): mount it here.
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
fi
arch-test arm64 >/dev/null 2>&1 ||
  die "arm64 programs do not run here: apt-get install qemu-user-static binfmt-support, then update-binfmts --enable qemu-aarch64" 69

SECONDS=0
mkdir -p "$work"
work=$(cd "$work" && pwd)
if [ "$boot_only" = 0 ]; then
  rm -rf "$work/artifact" "$work/source" "$work/rootfs" "$work/root.img" "$work/guest.img" "$work/vmlinuz" "$work/initrd.img"

  say "1/5 the install artifact: images/install.sh, systemd/, a wheel"
  mkdir -p "$work/artifact/images"
  cp "$repo/images/install.sh" "$work/artifact/images/"
  cp -r "$repo/systemd" "$work/artifact/"
  # The wheel from a copy of what it is made of, as install.sh --from-source does: setuptools
  # writes build/ and *.egg-info where it builds (root-owned in the checkout, as this runs as
  # root), and a stale build/lib of the checkout would end up in the wheel.
  mkdir "$work/source"
  cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/firmware" "$repo/hal" "$work/source/"
  find "$work/source" -name __pycache__ -type d -prune -exec rm -rf {} +
  "$python" -m pip wheel --quiet --no-deps -w "$work/artifact/dist" "$work/source"
  rm -rf "$work/source"

  say "   the demo call, and the encryption key pair"
  "$python" - "$work" <<'EOF'
import sys
from pathlib import Path

import numpy as np
import pyrage

from firmware.cli.demo import RATE, synthesize_call
from firmware.media.synth import dtmf_tone, mix

work = Path(sys.argv[1])
call, _ = synthesize_call()
lead = np.zeros((int(1.5 * RATE), 2), np.int16)  # the caller keys *1 first: the box starts recording
mix(lead, dtmf_tone("*", RATE, seconds=0.12), int(0.3 * RATE), channel=0)
mix(lead, dtmf_tone("1", RATE, seconds=0.12), int(0.6 * RATE), channel=0)
# Silence after the call: the check is done long before the file plugin reaches its end.
tail = np.zeros((600 * RATE, 2), np.int16)
np.concatenate([lead, call, tail]).astype("<i2").tofile(work / "demo-call.s16")
identity = pyrage.x25519.Identity.generate()
(work / "identity.txt").write_text(f"{identity}\n")
(work / "encryption.pub").write_text(f"{identity.to_public()}\n")
EOF

  say "2/5 a Debian 12 arm64 root file system with the artifact installed (mmdebstrap, qemu-user-static)"
  packages=(
    systemd-sysv udev kmod linux-image-arm64 initramfs-tools zstd ca-certificates dosfstools
    python3 python3-venv python3-dev gcc libasound2-dev libsndfile1 alsa-utils
  )
  export SMOKE_WORK=$work SMOKE_DIR=$repo/images/smoke
  # shellcheck disable=SC2016 # mmdebstrap runs each hook with sh, the root directory as $1
  # In a mount namespace of its own: whatever the build leaves mounted in the root (seen: /sys)
  # goes with it, and does not end up in the disk image.
  unshare --mount --propagation private mmdebstrap --arch=arm64 --variant=apt --mode=root --include="$(
    IFS=,
    echo "${packages[*]}"
  )" \
    --setup-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" && echo MODULES=list >"$1/etc/initramfs-tools/conf.d/modules-list"' \
    --customize-hook='"$SMOKE_DIR/customize.sh" "$1"' \
    bookworm "$work/rootfs" "$mirror"
  cp "$work"/rootfs/boot/vmlinuz-* "$work/vmlinuz"
  cp "$work"/rootfs/boot/initrd.img-* "$work/initrd.img"
  truncate -s 4G "$work/root.img"
  mkfs.ext4 -q -F -L edge-root -d "$work/rootfs" "$work/root.img"
  rm -rf "$work/rootfs"
fi
[ -f "$work/root.img" ] || die "no $work/root.img: run without --boot-only first" 1

say "3/5 the boot partition: edge-recorder.toml and edge-recorder/encryption.pub"
rm -f "$work/boot.img"
truncate -s 64M "$work/boot.img"
mkfs.vfat -n BOOTFS "$work/boot.img" >/dev/null
mmd -i "$work/boot.img" ::edge-recorder
{
  echo "# Written by images/smoke.sh."
  cat "$repo/images/smoke/first-boot.toml"
} >"$work/edge-recorder.toml"
mcopy -i "$work/boot.img" "$work/edge-recorder.toml" ::edge-recorder.toml
mcopy -i "$work/boot.img" "$work/encryption.pub" ::edge-recorder/encryption.pub

say "4/5 booting under qemu-system-aarch64 -M virt (at most $timeout s); console: $work/console.log"
boot_start=$SECONDS
rm -f "$work/console.log"
# The guest boots a copy: root.img stays as built, for --boot-only.
cp --sparse=always "$work/root.img" "$work/guest.img"
status=0
timeout --foreground "$timeout" qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 \
  -kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
  -append "root=/dev/vda rw console=ttyAMA0 panic=-1" \
  -drive "file=$work/guest.img,format=raw,if=virtio" \
  -drive "file=$work/boot.img,format=raw,if=virtio" \
  -nic none -display none -monitor none -serial "file:$work/console.log" -no-reboot || status=$?
[ "$status" != 124 ] || say "the guest did not power off within $timeout s"

# The checks' lines without the kernel's time stamp and unit name in front.
sed -e 's/\r$//' -e 's/\x1b\[[0-9;]*m//g' "$work/console.log" | sed -n 's/^.*\(SMOKE [A-Z]*: \)/\1/p' >"$work/checks.txt"
grep -v '^SMOKE LOG' "$work/checks.txt" >&2 || true
boot_seconds=$((SECONDS - boot_start))
if ! grep -q '^SMOKE RESULT: pass' "$work/checks.txt"; then
  grep '^SMOKE LOG' "$work/checks.txt" >&2 || true
  say "FAIL after ${SECONDS} s: see $work/console.log"
  exit 1
fi

# On the host: the encrypted recording out of the guest's disk, decrypted with the key pair
# made above, is the recording the box reported.
media=$(sed -n 's/^SMOKE PASS: its media file \([^ ]*\.era\) .*/\1/p' "$work/checks.txt")
duration=$(sed -n 's/^SMOKE PASS: the demo call was recorded: .* \([0-9.]*\) s .*/\1/p' "$work/checks.txt")
rm -f "$work/recording.era" "$work/recording.wav"
say "5/5 the recording out of the guest's disk, decrypted on the host"
debugfs -R "dump $media $work/recording.era" "$work/guest.img" 2>/dev/null
"$python" -m firmware.cli.main decrypt "$work/recording.era" -i "$work/identity.txt" -o "$work/recording.wav" >&2 ||
  die "the recording $media does not decrypt with the smoke test's key"
"$python" - "$work/recording.wav" "$duration" <<'EOF' || die "the decrypted recording is not what the box reported"
import sys

import soundfile as sf

info = sf.info(sys.argv[1])
print(f"smoke.sh: decrypted on the host: {info.duration:.2f} s, {info.channels} channels, {info.samplerate} Hz", file=sys.stderr)
sys.exit(not (info.channels == 2 and info.samplerate == 16000 and abs(info.duration - float(sys.argv[2])) < 0.05))
EOF
say "pass: boot and checks ${boot_seconds} s, all ${SECONDS} s"
