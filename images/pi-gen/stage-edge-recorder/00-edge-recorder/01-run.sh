#!/bin/bash -e
# Installs edge-recorder into the image. pi-gen runs this on the build machine from this folder,
# after 00-packages, with ROOTFS_DIR (the image's root file system) and on_chroot (run stdin with
# bash inside it) from its build.sh and scripts/common.
#
# files/ holds the install artifact of images/README.md laid out as in the repository
# (images/pi-gen/build.sh puts it there; so does extracting edge-recorder-install.tar.gz):
#   files/images/install.sh  files/systemd/  files/dist/edge_recorder-*.whl  [files/wheelhouse/]
# It is copied into the root file system and images/install.sh runs inside it with --root /, so
# the venv in /opt/edge-recorder/slots/VERSION is made by the image's own python3 for the image's CPU. The copy
# is removed.
#
# With a wheelhouse (built on an arm64 machine) the install is offline and needs only what
# 00-packages installed. Without one, pip fetches the dependencies from PyPI inside the image and
# compiles pyalsaaudio there (it has no wheel on PyPI): the build tools below that the image lacks
# are installed first and purged afterwards, with what they pulled in, also when the install
# fails, so that a compiler and headers do not stay on the box for this. (Raspberry Pi OS Lite
# ships build-essential, so its gcc is already there and stays: not ours to remove.)
#
# The copy goes to /var/tmp, not /tmp: pi-gen's on_chroot mounts a tmpfs over the image's /tmp
# (and /run), which would hide it.
set -e # also when run as "bash 01-run.sh"

staging=/var/tmp/edge-recorder-install # inside the image
# What pip needs to compile pyalsaaudio (tests/test_pigen.py reads this line).
build_tools="python3-dev gcc libasound2-dev"
wheels=(files/dist/edge_recorder-*.whl)
if [ ! -f files/images/install.sh ] || [ ! -d files/systemd ] || [ ${#wheels[@]} -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
  echo "01-run.sh: error: $PWD/files needs images/install.sh, systemd/ and one dist/edge_recorder-*.whl" >&2
  exit 66
fi
wheel=$(basename "${wheels[0]}")
offline="" tools=$build_tools
[ ! -d files/wheelhouse ] || offline="--wheelhouse $staging/wheelhouse --no-index" tools=""

target=${ROOTFS_DIR:?pi-gen sets ROOTFS_DIR}$staging
trap 'rm -rf "$target"' EXIT
rm -rf "$target"
install -d -m 0700 "$target"
cp -r files/images files/systemd files/dist "$target/"
[ -z "$offline" ] || cp -r files/wheelhouse "$target/"

# Runs inside the image: in-image.sh [BUILD_TOOL...] -- COMMAND...: installs the build tools the
# image lacks, then runs the command (images/install.sh). When it exits, also after a failure, it
# purges every package that installing the tools added, they and what they pulled in, so that no
# compiler stays on the box and a rebuild starts without them. (Not apt-get --auto-remove: that
# keeps a package which one still installed suggests, and python3.11 suggests binutils.)
cat > "$target/in-image.sh" << 'EOF'
tools=()
while [ "$1" != -- ]; do
  tools+=("$1")
  shift
done
shift
installed() { dpkg-query -W -f='${Package} ${db:Status-Status}\n' | sed -n 's/ installed$//p' | sort; }
purge_added() {
  local added
  mapfile -t added < <(installed | comm -13 <(echo "$before") -)
  [ ${#added[@]} -eq 0 ] || apt-get purge -y "${added[@]}"
}
missing=()
for package in "${tools[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null)" = installed ] || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  before=$(installed)
  trap purge_added EXIT
  apt-get install -y "${missing[@]}"
fi
"$@"
EOF

# The block is expanded here (unquoted EOF) and run by bash -e in the image.
on_chroot << EOF
bash -e $staging/in-image.sh $tools -- $staging/images/install.sh --wheel $staging/dist/$wheel $offline
EOF
