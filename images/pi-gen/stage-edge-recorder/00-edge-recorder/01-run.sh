#!/bin/bash -e
# Installs edge-recorder into the image. pi-gen runs this on the build machine from this folder,
# after 00-packages, with ROOTFS_DIR (the image's root file system) and on_chroot (run stdin with
# bash inside it) from its build.sh and scripts/common.
#
# files/ holds the install artifact of images/README.md laid out as in the repository
# (images/pi-gen/build.sh puts it there; so does extracting edge-recorder-install.tar.gz):
#   files/images/install.sh  files/systemd/  files/dist/edge_recorder-*.whl  [files/wheelhouse/]
# It is copied into the root file system and images/install.sh runs inside it with --root /, so
# the venv in /opt/edge-recorder is made by the image's own python3 for the image's CPU. With a
# wheelhouse (built on an arm64 machine) the install is offline; without one, pip fetches the
# dependencies from PyPI inside the image and builds pyalsaaudio there. The copy is removed.
#
# The copy goes to /var/tmp, not /tmp: pi-gen's on_chroot mounts a tmpfs over the image's /tmp
# (and /run), which would hide it.
set -e # also when run as "bash 01-run.sh"

staging=/var/tmp/edge-recorder-install # inside the image
wheels=(files/dist/edge_recorder-*.whl)
if [ ! -f files/images/install.sh ] || [ ! -d files/systemd ] || [ ${#wheels[@]} -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
  echo "01-run.sh: error: $PWD/files needs images/install.sh, systemd/ and one dist/edge_recorder-*.whl" >&2
  exit 66
fi
wheel=$(basename "${wheels[0]}")
offline=""
[ ! -d files/wheelhouse ] || offline="--wheelhouse $staging/wheelhouse --no-index"

target=${ROOTFS_DIR:?pi-gen sets ROOTFS_DIR}$staging
trap 'rm -rf "$target"' EXIT
rm -rf "$target"
install -d -m 0700 "$target"
cp -r files/images files/systemd files/dist "$target/"
[ -z "$offline" ] || cp -r files/wheelhouse "$target/"

# The block is expanded here (unquoted EOF) and run by bash -e in the image.
on_chroot << EOF
$staging/images/install.sh --wheel $staging/dist/$wheel $offline
EOF
