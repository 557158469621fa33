#!/usr/bin/env bash
# Build a flashable Raspberry Pi OS Lite (64-bit, Bookworm) image with edge-recorder installed
# and enabled, with pi-gen (https://github.com/RPi-Distro/pi-gen). See images/pi-gen/README.md.
#
#   sudo images/pi-gen/build.sh [--pi-gen DIR] [--ref REF] [--config FILE]
#   options: [--wheelhouse DIR | --build-wheelhouse] [--docker | --prepare-only]
#
#  1. Checks, before it writes anything, that this machine can do it: root (pi-gen's build.sh
#     needs it) or Docker with --docker; arm64 programs run (an arm64 machine, or qemu-user-static
#     registered with binfmt_misc); pi-gen's tools; the Debian and Raspberry Pi archives reachable.
#  2. Builds the edge-recorder wheel (pip wheel --no-deps) from a copy of this checkout's
#     sources in a temporary folder, so that nothing is written into the checkout; with
#     --build-wheelhouse every dependency's wheel too (only on arm64: wheels are made for the
#     machine that builds them).
#  3. Clones pi-gen at REF into DIR, unless DIR is a pi-gen checkout already.
#  4. Copies stage-edge-recorder into DIR with the install artifact (images/install.sh, systemd/,
#     the wheel, the wheelhouse) in its files/, the config as DIR/config, and an empty
#     SKIP_IMAGES into DIR/stage2 so that only this image is exported.
#  5. Runs DIR/build.sh (--docker: DIR/build-docker.sh); the image lands in DIR/deploy/.
# --prepare-only does 2 to 4 and stops (only python3 with pip, and git to clone, are checked):
# DIR can then be built on another machine.
#
# Exit status: 0 done, 64 wrong arguments, 66 a file or folder given is missing, 69 something
# this machine lacks (a program, arm64 emulation, an archive it cannot reach), 77 not root,
# 1 anything else (pi-gen's or pip's message is above it).
# PI_GEN_BINFMT_MISC: where binfmt_misc is mounted (default /proc/sys/fs/binfmt_misc).
set -euo pipefail
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
stage_name="stage-edge-recorder"
pi_gen_url=https://github.com/RPi-Distro/pi-gen.git
# The newest Bookworm release of pi-gen's arm64 branch; a newer *-raspios-bookworm-arm64 tag
# works the same (images/pi-gen/README.md).
pi_gen_ref=2026-06-18-raspios-bookworm-arm64
binfmt_misc=${PI_GEN_BINFMT_MISC:-/proc/sys/fs/binfmt_misc}

usage() {
  echo "usage:"
  sed -n '5,6p' "$0" | sed 's/^#//'
  echo "  --pi-gen DIR         pi-gen checkout to use, cloned there if missing (default: build/pi-gen)"
  echo "  --ref REF            pi-gen tag or branch to clone (default: $pi_gen_ref)"
  echo "  --config FILE        pi-gen config (default: images/pi-gen/config)"
  echo "  --wheelhouse DIR     wheels for an offline install, built on an arm64 machine"
  echo "  --build-wheelhouse   build that wheelhouse here (arm64 only)"
  echo "  --docker             run pi-gen's build-docker.sh instead of its build.sh"
  echo "  --prepare-only       prepare DIR (stage, install artifact, config) but do not build"
}
die() {
  echo "build.sh: error: $1" >&2
  exit "${2:-1}"
}
say() { echo "build.sh: $*" >&2; }
wrong() {
  echo "build.sh: error: $1 (see --help)" >&2
  exit 64
}

pi_gen=$repo/build/pi-gen config=$here/config wheelhouse="" build_wheelhouse=0 docker=0 prepare_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --pi-gen | --ref | --config | --wheelhouse)
      if [ $# -lt 2 ] || [ -z "$2" ]; then wrong "$1 needs a value"; fi
      case "$1" in
        --pi-gen) pi_gen=$2 ;;
        --ref) pi_gen_ref=$2 ;;
        --config) config=$2 ;;
        --wheelhouse) wheelhouse=$2 ;;
      esac
      shift 2
      ;;
    --build-wheelhouse) build_wheelhouse=1; shift ;;
    --docker) docker=1; shift ;;
    --prepare-only) prepare_only=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) wrong "unknown argument: $1" ;;
  esac
done

# -- checks: nothing is written before they pass ----------------------------------------------
[ -z "$wheelhouse" ] || [ "$build_wheelhouse" = 0 ] || wrong "give --wheelhouse DIR or --build-wheelhouse, not both"
[ "$docker" = 0 ] || [ "$prepare_only" = 0 ] || wrong "give --docker or --prepare-only, not both"
[[ $pi_gen != *" "* ]] || wrong "pi-gen's folder must not contain a space (debootstrap cannot use it): $pi_gen"
[ -f "$config" ] || die "no such config: $config" 66
[ -z "$wheelhouse" ] || [ -d "$wheelhouse" ] || die "no such wheelhouse: $wheelhouse" 66
if [ -e "$pi_gen" ] && { [ ! -f "$pi_gen/build.sh" ] || [ ! -f "$pi_gen/scripts/common" ] || [ ! -d "$pi_gen/stage2" ]; }; then
  die "$pi_gen is not a pi-gen checkout (build.sh, scripts/common, stage2/): give another --pi-gen DIR" 66
fi
machine=$(uname -m)
if [ "$build_wheelhouse" = 1 ] && [ "$machine" != aarch64 ]; then
  die "--build-wheelhouse makes wheels for this $machine machine, not for the Pi: build it on arm64, or leave it out (pip then fetches the wheels inside the image)" 69
fi

# arm64 programs: natively, or through a binfmt_misc entry for aarch64 ELF files with the F flag
# (the interpreter is opened here, so it works inside the chroot as well).
arm64_runs() {
  [ "$machine" = aarch64 ] && return 0
  local entry
  for entry in "$binfmt_misc"/*; do
    [ -f "$entry" ] || continue
    grep -qx enabled "$entry" 2>/dev/null || continue
    grep -q '^magic 7f454c460201010000000000000000000200b700' "$entry" || continue
    grep -q '^flags:.*F' "$entry" && return 0
  done
  return 1
}

needs=() # COMMAND:PACKAGE
if [ "$prepare_only" = 0 ]; then
  if [ "$docker" = 0 ] && [ "$(id -u)" -ne 0 ]; then
    die "pi-gen's build.sh must run as root: sudo $0 (or --docker)" 77
  fi
  if ! arm64_runs; then
    # pi-gen's build-docker.sh registers qemu-user-static itself; the kernel must offer binfmt_misc.
    { [ "$docker" = 1 ] && grep -qw binfmt_misc /proc/filesystems; } ||
      die "this $machine machine cannot run arm64 programs: build on an arm64 machine, or install qemu-user-static and binfmt-support (aarch64 registered with binfmt_misc, flag F)" 69
  fi
  if [ "$docker" = 1 ]; then
    needs=(docker:docker.io git:git)
  else # pi-gen's own list (its README, "Dependencies"), and curl for the check below
    needs=(quilt:quilt parted:parted debootstrap:debootstrap zerofree:zerofree zip:zip
      mkdosfs:dosfstools bsdtar:libarchive-tools capsh:libcap2-bin rsync:rsync xz:xz-utils
      file:file git:git curl:curl bc:bc gpg:gpg pigz:pigz xxd:xxd arch-test:arch-test
      losetup:mount)
  fi
elif [ ! -e "$pi_gen" ]; then
  needs=(git:git)
fi
missing=()
for need in "${needs[@]}"; do
  command -v "${need%%:*}" >/dev/null || missing+=("${need#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  die "missing programs, install them with: apt-get install ${missing[*]}" 69
fi
python=python3
[ ! -x "$repo/.venv/bin/python" ] || python=$repo/.venv/bin/python
"$python" -m pip --version >/dev/null 2>&1 || die "$python has no pip: install python3-pip, or run ./run.sh once for .venv" 69
if [ "$prepare_only" = 0 ] && [ "$docker" = 1 ]; then
  docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (docker info): start it, or add this user to the docker group" 69
fi
if [ "$prepare_only" = 0 ] && [ "$docker" = 0 ]; then
  # pi-gen installs from both archives (an APT_PROXY in the config is not used for this check).
  for url in http://deb.debian.org/debian/dists/bookworm/InRelease \
    http://archive.raspberrypi.com/debian/dists/bookworm/InRelease; do
    curl -fsS --max-time 20 -o /dev/null "$url" 2>/dev/null ||
      die "cannot reach ${url%%/dists/*}: pi-gen installs Raspberry Pi OS from there" 69
  done
fi

# -- the install artifact ---------------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# setuptools writes build/ and *.egg-info into the folder it builds from, and packs whatever is in
# build/lib: built in the checkout, a module deleted since the last build would still ship, and
# as root the checkout would get root-owned files. So the wheel is built from a fresh copy of
# what it is made of (the files tests/test_install.py's copy_source takes), working tree as is.
source=$work/source
mkdir "$source"
cp -R "$repo/pyproject.toml" "$repo/README.md" "$repo/firmware" "$repo/hal" "$source/"
find "$source" -name __pycache__ -type d -prune -exec rm -rf {} +
say "building the edge-recorder wheel from $repo (a copy of its sources)"
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$source"
if [ "$build_wheelhouse" = 1 ]; then
  say "building the wheelhouse (every dependency) on this arm64 machine"
  "$python" -m pip wheel --quiet --wheel-dir "$work/wheelhouse" "$source" setuptools
fi

# -- pi-gen -----------------------------------------------------------------------------------
if [ ! -e "$pi_gen" ]; then
  say "cloning pi-gen $pi_gen_ref into $pi_gen"
  mkdir -p "$(dirname "$pi_gen")"
  git clone --quiet --depth 1 --branch "$pi_gen_ref" "$pi_gen_url" "$pi_gen" ||
    die "could not clone $pi_gen_url at $pi_gen_ref" 69
fi
pi_gen=$(cd "$pi_gen" && pwd)
grep -q 'ARCH=arm64' "$pi_gen/build.sh" ||
  say "note: $pi_gen/build.sh does not set ARCH=arm64: is it pi-gen's arm64 branch (a *-raspios-bookworm-arm64 tag)?"

stage=$pi_gen/$stage_name
files=$stage/00-edge-recorder/files
rm -rf "$stage"
cp -r "$here/$stage_name" "$stage"
install -d "$files/images" "$files/dist"
install -m 0755 "$repo/images/install.sh" "$files/images/install.sh"
install -D -m 0755 "$repo/images/mender/edge-recorder" "$files/images/mender/edge-recorder"
cp -r "$repo/systemd" "$files/systemd"
cp "$work"/dist/edge_recorder-*.whl "$files/dist/"
if [ -n "$wheelhouse" ]; then
  cp -r "$wheelhouse" "$files/wheelhouse"
elif [ "$build_wheelhouse" = 1 ]; then
  cp -r "$work/wheelhouse" "$files/wheelhouse"
fi
cp "$config" "$pi_gen/config"
touch "$pi_gen/stage2/SKIP_IMAGES"
say "prepared $stage and $pi_gen/config"

# -- build ------------------------------------------------------------------------------------
if [ "$prepare_only" = 1 ]; then
  say "build it with: cd $pi_gen && sudo ./build.sh (or ./build-docker.sh)"
  exit 0
fi
cd "$pi_gen"
if [ "$docker" = 1 ]; then
  say "running pi-gen's build-docker.sh (about an hour, more under emulation)"
  ./build-docker.sh
else
  say "running pi-gen's build.sh (about an hour, more under emulation)"
  ./build.sh
fi
say "done; the image is in $pi_gen/deploy/:"
ls -l "$pi_gen/deploy/" >&2
