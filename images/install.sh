#!/usr/bin/env bash
# Install edge-recorder into a root file system: the one install artifact of images/ that an
# installer (on a box), an image build (in its chroot) and `edge-recorder update` all apply.
#
#   images/install.sh --wheel dist/edge_recorder-0.1.0-py3-none-any.whl
#   images/install.sh --from-source .
#   options: [--root DIR] [--wheelhouse DIR [--no-index]] [--python PYTHON] [--update-key FILE]
#            [--prepare | --switch SLOT] [--catalog FILE [--catalog-copy FILE]]
#
# Each version lives in a slot of its own, and one link says which one runs (images/README.md,
# "Updating boxes"; firmware/update/slots.py reads the same layout):
#   /opt/edge-recorder/slots/VERSION     a virtual environment; VERSION-2, -3... for the same
#                                        version again (a reinstall, a forced update)
#   /opt/edge-recorder/current -> slots/VERSION    the running version: the switch renames a
#                                        new link over this one, so it is atomic
#   /opt/edge-recorder/previous -> slots/VERSION   the one before, kept to go back to
#   /opt/edge-recorder/bin, lib, pyvenv.cfg -> current/...   /opt/edge-recorder itself is the
#                                        running version's venv, as the units expect
#
# Every step can be repeated (an upgrade is the same command with a newer wheel):
#  1. A new slot (never the current or the previous one): a virtual environment (python3 -m
#     venv) with the wheel and its dependencies (pip; --wheelhouse DIR --no-index for an
#     offline install), and a copy of this script and systemd/ (and mender/edge-recorder, when
#     it is beside this script) to switch back to it later. pip byte-compiles it, as the units
#     run with PYTHONDONTWRITEBYTECODE=1 on a read-only /opt.
#     Slots that are neither current nor previous (an interrupted install) are removed first.
#  2. The link /usr/local/bin/edge-recorder -> /opt/edge-recorder/bin/edge-recorder puts the
#     command on PATH (a file already there that is not that link is left as it is, with a
#     note). The units, sysusers.d and tmpfiles.d entries from systemd/ (beside this folder)
#     into /usr/lib, and the update guard as /usr/lib/edge-recorder/update-guard (outside the
#     slots: it switches back an update that does not prove itself, see systemd/update-guard),
#     and, when mender/edge-recorder is beside this script, the Mender Update Module as
#     /usr/share/mender/modules/v3/edge-recorder (images/mender/README.md); then systemd-sysusers
#     and systemd-tmpfiles for them: user and group edge-recorder, /etc/edge-recorder
#     root:edge-recorder 0750.
#  3. /etc/edge-recorder/config.toml from `edge-recorder config defaults` (0640), unless a
#     config is already there: an upgrade never replaces the box's config. With
#     --update-key FILE, the minisign public key that update bundles must be signed with, as
#     /etc/edge-recorder/update.pub (replaced when given, kept otherwise).
#  4. Enables edge-recorder.service, edge-recorder-provision.service, edge-recorder-update-card.service
#     and edge-recorder-update.path (the other ways in of an update: the boot partition, MQTT) (systemctl --root,
#     which works offline: symlinks in /etc/systemd/system/multi-user.target.wants/).
#  5. The switch: when a slot ran before, the update guard records the switch as pending
#     (/opt/edge-recorder/update.state: until the new version confirms it, a crash loop, a failed
#     start or a reboot switches back); then previous -> what current named, then current -> the
#     new slot (a link renamed over the old one), then the slots that are neither are removed. An
#     install from before slots (a venv directly at /opt/edge-recorder) is moved into this layout
#     here; the box's config, catalog and spool (/etc, /var/lib) are not touched.
# --prepare stops after step 1 and prints the new slot's name; --switch SLOT does steps 2 to 5
# for a slot made that way (`edge-recorder update` checks the new version in between).
# --catalog FILE names the catalog (its path on the box) with the switch, and --catalog-copy FILE
# the copy of it from before the switch that a rollback puts back (`edge-recorder update` gives it
# when the new version writes a newer catalog schema; images/README.md, "The catalog rule").
#
# --root other than / (a "staged" install, e.g. into an empty directory in the tests): the
# venv is built in ROOT/opt/edge-recorder/slots/VERSION with PYTHON (the host's) and then moved
# in place: its interpreter links point at the target's /usr/bin/python3 and every script that
# named ROOT/opt/edge-recorder names /opt/edge-recorder, so it works once ROOT is the root. This
# only fits a target with the same Python minor version and CPU architecture as PYTHON (the
# script checks when the target has a python3 already). For another architecture (a Pi image
# built on x86-64), run this script inside the target instead, with --root / (pi-gen:
# on_chroot; mmdebstrap: chroot), so the venv is made by the target's own python3.
# As a user other than root (only sensible with --root), files keep that user as owner and
# systemd-sysusers/systemd-tmpfiles are skipped; systemd applies both at the first boot.
set -euo pipefail
umask 022

prefix=/opt/edge-recorder
units=(edge-recorder.service edge-recorder-provision.service edge-recorder-update-card.service edge-recorder-update.path)
# Started by edge-recorder.service's OnFailure= and by edge-recorder-update.path only: installed, never enabled.
helper_units=(edge-recorder-rollback.service edge-recorder-update.service)
guard=/usr/lib/edge-recorder/update-guard
mender_module=/usr/share/mender/modules/v3/edge-recorder # Mender looks there, and only there

usage() {
  echo "usage:" >&2
  sed -n '5,8p' "$0" | sed 's/^#//' >&2
  exit 64
}
die() { # MESSAGE [EXIT STATUS, default 1]
  echo "install.sh: error: $1" >&2
  exit "${2:-1}"
}
say() { echo "install.sh: $*" >&2; }

root=/ wheel="" source_dir="" wheelhouse="" no_index=0 python=python3 update_key="" prepare=0 switch=""
catalog="" catalog_copy=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root | --wheel | --from-source | --wheelhouse | --python | --update-key | --switch | --catalog | --catalog-copy)
      if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value" 64; fi
      case "$1" in
        --root) root=$2 ;;
        --wheel) wheel=$2 ;;
        --from-source) source_dir=$2 ;;
        --wheelhouse) wheelhouse=$2 ;;
        --python) python=$2 ;;
        --update-key) update_key=$2 ;;
        --switch) switch=$2 ;;
        --catalog) catalog=$2 ;;
        --catalog-copy) catalog_copy=$2 ;;
      esac
      shift 2
      ;;
    --no-index) no_index=1; shift ;;
    --prepare) prepare=1; shift ;;
    -h | --help) usage ;;
    *) echo "install.sh: error: unknown argument: $1" >&2; usage ;;
  esac
done

# -- checks -----------------------------------------------------------------------------------
if [ -n "$switch" ]; then
  [ "$prepare" = 0 ] || die "give at most one of --prepare and --switch SLOT" 64
  if [ -n "$wheel$source_dir$wheelhouse" ] || [ "$no_index" = 1 ]; then
    die "--switch SLOT installs nothing new: give no --wheel, --from-source, --wheelhouse or --no-index with it" 64
  fi
  [[ $switch =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]] || die "not a slot name: $switch" 64
elif { [ -n "$wheel" ] && [ -n "$source_dir" ]; } || { [ -z "$wheel" ] && [ -z "$source_dir" ]; }; then
  echo "install.sh: error: give exactly one of --wheel FILE and --from-source DIR" >&2
  usage
fi
[ -z "$wheel" ] || [ -f "$wheel" ] || die "no such wheel: $wheel" 66
[ -z "$source_dir" ] || [ -f "$source_dir/pyproject.toml" ] || die "$source_dir has no pyproject.toml" 66
[ -z "$wheelhouse" ] || [ -d "$wheelhouse" ] || die "no such wheelhouse: $wheelhouse" 66
[ "$no_index" = 0 ] || [ -n "$wheelhouse" ] || die "--no-index needs --wheelhouse DIR" 64
[ -z "$update_key" ] || [ -f "$update_key" ] || die "no such update key: $update_key" 66
# A minisign public key: a comment line, then "Ed", the key id and the key in base64 (56 characters).
[ -z "$update_key" ] || sed -n 2p "$update_key" | grep -Eqx 'RW[A-Za-z0-9+/]{54}' ||
  die "$update_key is not a minisign public key (minisign -G makes one)" 65
[ -z "$catalog_copy" ] || [ -n "$catalog" ] || die "--catalog-copy needs --catalog FILE" 64
[ "$prepare" = 0 ] || [ -z "$catalog" ] || die "--prepare switches nothing: give --catalog with --switch SLOT" 64
for path in "$catalog" "$catalog_copy"; do
  # Paths on the box, as the update state records them: absolute, one line.
  [ -z "$path" ] || { [[ $path == /* ]] && [[ $path != *$'\n'* ]]; } || die "not a path on the box: $path" 64
done
[ -d "$root" ] || die "no such root directory: $root" 66
command -v "$python" >/dev/null || die "$python not found: install python3 and python3-venv" 69
for tool in systemctl systemd-sysusers systemd-tmpfiles; do
  command -v "$tool" >/dev/null || die "$tool not found: install systemd" 69
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
systemd_dir=$(cd "$here/../systemd" 2>/dev/null && pwd) || die "no systemd/ folder beside $here" 66
[ -z "$wheel" ] || wheel=$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")
[ -z "$source_dir" ] || source_dir=$(cd "$source_dir" && pwd)
[ -z "$wheelhouse" ] || wheelhouse=$(cd "$wheelhouse" && pwd)
[ -z "$update_key" ] || update_key=$(cd "$(dirname "$update_key")" && pwd)/$(basename "$update_key")
root=$(cd "$root" && pwd -P)
# Every path is absolute from here on. The working directory may be anyone's (a USB stick, a download
# folder): Python's -m and -c would import a pip.py or venv.py from it, as root.
cd /
r=${root%/} # "" for /: every path on the box is "$r/path"
top=$r$prefix
slots=$top/slots
as_root=0
[ "$(id -u)" -ne 0 ] || as_root=1
[ -z "$switch" ] || [ -x "$slots/$switch/bin/python" ] || die "no such slot: $slots/$switch" 66

# A staged venv only runs on the same Python minor version and architecture.
elf_machine() { od -An -tx1 -j18 -N2 "$1" | tr -d ' \n'; }
if [ -n "$r" ]; then
  host_version=$("$python" -I -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  host_python=$("$python" -I -c 'import os, sys; print(os.path.realpath(sys.executable))')
  if [ -e "$r/usr/bin/python3" ] || [ -L "$r/usr/bin/python3" ]; then
    target_python=$(readlink "$r/usr/bin/python3" || echo python3)
    target_version=${target_python##*python}
    [ "$target_version" = "$host_version" ] ||
      die "$root has $target_python, $python is $host_version: run this inside the target (--root /) instead"
    if [ -f "$r/usr/bin/python$host_version" ] &&
      [ "$(elf_machine "$r/usr/bin/python$host_version")" != "$(elf_machine "$host_python")" ]; then
      die "$root is for another CPU architecture than $python: run this inside the target (--root /) instead"
    fi
  else
    say "note: $root has no /usr/bin/python3 yet; the venv needs python$host_version there"
  fi
fi

pip_index=()
[ -z "$wheelhouse" ] || pip_index+=(--find-links "$wheelhouse")
[ "$no_index" = 0 ] || pip_index+=(--no-index)
# Offline (a bundle's wheels): only those wheels, whatever pip.conf or PIP_* on this machine say.
pip_only=()
if [ "$no_index" = 1 ]; then
  pip_only+=(--isolated --only-binary=:all:) # no PIP_* variables
  export PIP_CONFIG_FILE=/dev/null           # and no pip.conf, /etc/pip.conf included
fi

# The slot a link names ("" when there is no such link).
slot_of() { local target; target=$(readlink "$top/$1" 2>/dev/null) || return 0; basename "$target"; }
current=$(slot_of current)
previous=$(slot_of previous)
# Slots that are neither current nor previous: an interrupted install, or the one a switch retired.
prune() {
  local slot name
  for slot in "$slots"/*; do
    name=$(basename "$slot")
    if [ -e "$slot" ] && [ "$name" != "$(slot_of current)" ] && [ "$name" != "$(slot_of previous)" ]; then
      rm -rf -- "$slot"
    fi
  done
}

# Staged: the venv built at $r$prefix/slots/NAME is made to work at $prefix/slots/NAME.
move_in_place() { # SLOT
  local slot=$1 link staged
  # Whichever of python, python3, python3.X venv linked to $python (the others link to it).
  for link in "$slot"/bin/python*; do
    if [ -L "$link" ] && [[ $(readlink "$link") == /* ]]; then
      ln -sfn /usr/bin/python3 "$link"
    fi
  done
  sed -i -e 's|^home = .*|home = /usr/bin|' \
    -e "s|^executable = .*|executable = /usr/bin/python$host_version|" \
    -e "s|^command = .*|command = /usr/bin/python3 -m venv ${slot#"$r"}|" "$slot/pyvenv.cfg"
  staged=$(printf '%s' "$top" | sed -e 's/[]\/$*.^|[]/\\&/g')
  { grep -rlIF -- "$top" "$slot/bin" || true; } | while IFS= read -r file; do
    sed -i "s|$staged|$prefix|g" "$file"
  done
}

work=$(mktemp -d)
slot="" prepared=0
cleanup() {
  rm -rf "$work"
  # A slot this run began and did not finish is removed (prune would, at the next install).
  if [ "$prepared" = 0 ] && [ -n "$slot" ] && [ -z "$switch" ]; then rm -rf -- "$slot"; fi
}
trap cleanup EXIT

# -- 1. the new slot ------------------------------------------------------------------------
if [ -z "$switch" ]; then
  if [ -n "$source_dir" ]; then
    say "building the wheel from $source_dir"
    # From a copy of what the wheel is made of: setuptools writes build/ and *.egg-info where it
    # builds (root-owned in a checkout under sudo), and a stale build/lib would end up in the wheel.
    mkdir "$work/source"
    for part in pyproject.toml README.md firmware hal; do
      [ -e "$source_dir/$part" ] || die "$source_dir has no $part" 66
      cp -r "$source_dir/$part" "$work/source/"
    done
    find "$work/source" -name __pycache__ -type d -prune -exec rm -rf {} +
    # The slot's name comes from the wheel's version, so the wheel is built before the slot.
    "$python" -I -m venv "$work/build"
    "$work/build/bin/python" -I -m pip --disable-pip-version-check --no-input --no-cache-dir \
      wheel --quiet --no-deps "${pip_index[@]}" --wheel-dir "$work" "$work/source"
    wheel=$(find "$work" -maxdepth 1 -name 'edge_recorder-*.whl' | head -n 1)
    [ -n "$wheel" ] || die "pip built no edge_recorder wheel from $source_dir"
  fi
  # edge_recorder-VERSION-py3-none-any.whl
  version=$(basename "$wheel" | cut -d- -f2)
  [[ $version =~ ^[A-Za-z0-9][A-Za-z0-9._+]*$ ]] || die "$(basename "$wheel") is not a wheel of edge-recorder"
  name=$version n=1
  while [ "$name" = "$current" ] || [ "$name" = "$previous" ]; do
    n=$((n + 1))
    name=$version-$n
  done
  install -d -m 0755 "$top" "$slots"
  prune
  slot=$slots/$name
  say "virtual environment $slot"
  "$python" -I -m venv "$slot"
  pip=("$slot/bin/python" -I -m pip --disable-pip-version-check --no-input --no-cache-dir)
  say "installing $(basename "$wheel") and its dependencies"
  "${pip[@]}" install --quiet --no-warn-script-location "${pip_only[@]}" "${pip_index[@]}" "$wheel"
  # -I: the slot's own firmware, not a firmware/ folder in the working directory (a checkout).
  installed=$("$slot/bin/python" -I -m firmware.cli.main --version)
  [ "$installed" = "edge-recorder $version" ] || die "$(basename "$wheel") installed $installed"
  # What it takes to switch back to this slot later: this script and the units it installs.
  install -D -m 0755 "$here/install.sh" "$slot/images/install.sh"
  install -d -m 0755 "$slot/systemd"
  find "$systemd_dir" -maxdepth 1 -type f -exec install -m 0644 {} "$slot/systemd/" \;
  if [ -f "$here/mender/edge-recorder" ]; then
    install -D -m 0755 "$here/mender/edge-recorder" "$slot/images/mender/edge-recorder"
  fi
  if [ "$prepare" = 1 ]; then
    [ -z "$r" ] || move_in_place "$slot"
    prepared=1
    say "edge-recorder $version prepared in $slot"
    echo "$name"
    exit 0
  fi
else
  name=$switch
  slot=$slots/$name
fi
prepared=1 # from here on the slot is whole: a failure below leaves it for the next prune
edge_recorder=("$slot/bin/python" -I -m firmware.cli.main)
version=$("${edge_recorder[@]}" --version)

# -- 2. the command on PATH; units, users, directories ----------------------------------------
# For `sudo edge-recorder provision` and the like (sudo's secure_path has /usr/local/bin). The
# link names the running version's script where it is on the box.
command_link=$r/usr/local/bin/edge-recorder
if [ "$(readlink "$command_link")" = "$prefix/bin/edge-recorder" ]; then
  : # ours, from an earlier install
elif [ -e "$command_link" ] || [ -L "$command_link" ]; then
  say "note: $command_link is not a link to $prefix/bin/edge-recorder: left as it is; run $prefix/bin/edge-recorder by its full path"
else
  install -d -m 0755 "$r/usr/local/bin"
  ln -s "$prefix/bin/edge-recorder" "$command_link"
fi

# Each file whole or not at all: written beside the old one, synced, then renamed over it. install(1)
# alone truncates the old file in place, and a power cut before the data reaches the card leaves an
# empty unit, which systemd takes as masked: a box that no longer starts.
put() { # MODE SOURCE TARGET
  install -D -m "$1" "$2" "$3.new"
  sync "$3.new"
  mv -f "$3.new" "$3"
}
for unit in "${units[@]}" "${helper_units[@]}"; do
  put 0644 "$systemd_dir/$unit" "$r/usr/lib/systemd/system/$unit"
done
put 0755 "$systemd_dir/update-guard" "$r$guard"
if [ -f "$here/mender/edge-recorder" ]; then
  put 0755 "$here/mender/edge-recorder" "$r$mender_module"
fi
put 0644 "$systemd_dir/edge-recorder.sysusers" "$r/usr/lib/sysusers.d/edge-recorder.conf"
put 0644 "$systemd_dir/edge-recorder.tmpfiles" "$r/usr/lib/tmpfiles.d/edge-recorder.conf"
if [ "$as_root" = 1 ]; then
  install -d -m 0755 "$r/etc" # an empty root: sysusers writes /etc/passwd, /etc/group
  systemd-sysusers --root="$root" edge-recorder.conf
else
  say "not root: user and group edge-recorder are made by systemd-sysusers at the first boot"
fi

# -- 3. the default config, the update key ------------------------------------------------------
config=$r/etc/edge-recorder/config.toml
install -d -m 0750 "$r/etc/edge-recorder"
if [ -e "$config" ]; then
  say "keeping the existing $config"
else
  "${edge_recorder[@]}" config defaults >"$work/config.toml"
  "${edge_recorder[@]}" config check "$work/config.toml" >/dev/null
  install -m 0640 "$work/config.toml" "$config"
  say "default config $config"
fi
if [ "$as_root" = 1 ]; then
  # root:edge-recorder 0750 for the folder, 0640 for config.toml (edge-recorder.tmpfiles).
  systemd-tmpfiles --root="$root" --create edge-recorder.conf
else
  say "not root: owner and mode of /etc/edge-recorder are set by systemd-tmpfiles at the first boot"
fi
if [ -n "$update_key" ]; then
  install -m 0644 "$update_key" "$r/etc/edge-recorder/update.pub"
  say "update key /etc/edge-recorder/update.pub"
elif [ ! -e "$r/etc/edge-recorder/update.pub" ]; then
  say "note: no /etc/edge-recorder/update.pub: edge-recorder update refuses every bundle until it is there (--update-key FILE)"
fi

# -- 4. enable ------------------------------------------------------------------------------
systemctl --root="$root" enable "${units[@]}"

# -- 5. the switch ------------------------------------------------------------------------------
[ -n "$switch" ] || [ -z "$r" ] || move_in_place "$slot"
if [ -n "$current" ] && [ "$current" != "$name" ]; then
  # Pending from here on: written before current changes, so no moment runs the new slot unguarded.
  sh "$r$guard" --root "$root" switch "$name" "${version#edge-recorder }" "$catalog" "$catalog_copy"
  ln -sfn "slots/$current" "$top/previous.new"
  mv -T "$top/previous.new" "$top/previous"
fi
# What the slot holds reaches the disk before the link that names it: pip writes without fsync, and
# after a power cut current must never name a slot of empty files.
sync -f "$slot/" 2>/dev/null || sync
ln -sfn "slots/$name" "$top/current.new"
mv -T "$top/current.new" "$top/current" # rename(2): the running version changes here, at once
sync -f "$top/" 2>/dev/null || sync
if [ -f "$top/pyvenv.cfg" ] && [ ! -L "$top/pyvenv.cfg" ]; then
  # An install from before slots: the venv was /opt/edge-recorder itself. Its parts give way to
  # the links into current (a link cannot be renamed over a folder, so they go first); what else
  # the box keeps there is left alone.
  say "moving the install from before slots (a venv at $prefix) into $prefix/slots"
  for part in bin lib lib64 include share pyvenv.cfg; do rm -rf -- "${top:?}/$part"; done
fi
for part in bin lib pyvenv.cfg; do
  if [ "$(readlink "$top/$part")" != "current/$part" ]; then
    ln -sfn "current/$part" "$top/$part.new"
    mv -T "$top/$part.new" "$top/$part"
  fi
done
prune

if [ -z "$r" ] && [ -d /run/systemd/system ] && ! systemd-detect-virt --quiet --chroot; then
  systemctl daemon-reload
  say "start it with: systemctl start edge-recorder (restart it after an upgrade)"
fi
say "$version installed in $root (slot $prefix/slots/$name)"
