#!/usr/bin/env bash
# Install edge-recorder into a root file system: the one install artifact of images/ that an
# installer (on a box) and an image build (in its chroot) both apply. See images/README.md.
#
#   images/install.sh --wheel dist/edge_recorder-0.1.0-py3-none-any.whl
#   images/install.sh --from-source .
#   options: [--root DIR] [--wheelhouse DIR [--no-index]] [--python PYTHON]
#
# Every step can be repeated (an upgrade is the same command with a newer wheel):
#  1. /opt/edge-recorder: a virtual environment (python3 -m venv) with the wheel and its
#     dependencies (pip; --wheelhouse DIR --no-index for an offline install). pip byte-compiles
#     it, as the units run with PYTHONDONTWRITEBYTECODE=1 on a read-only /opt. The link
#     /usr/local/bin/edge-recorder -> /opt/edge-recorder/bin/edge-recorder puts the command on
#     PATH (a file already there that is not that link is left as it is, with a note).
#  2. The units, sysusers.d and tmpfiles.d entries from systemd/ (beside this folder) into
#     /usr/lib, then systemd-sysusers and systemd-tmpfiles for them: user and group
#     edge-recorder, /etc/edge-recorder root:edge-recorder 0750.
#  3. /etc/edge-recorder/config.toml from `edge-recorder config defaults` (0640), unless a
#     config is already there: an upgrade never replaces the box's config.
#  4. Enables edge-recorder.service and edge-recorder-provision.service (systemctl --root,
#     which works offline: symlinks in /etc/systemd/system/multi-user.target.wants/).
#
# --root other than / (a "staged" install, e.g. into an empty directory in the tests): the
# venv is built in ROOT/opt/edge-recorder with PYTHON (the host's) and then moved in place:
# its interpreter links point at the target's /usr/bin/python3 and every script that named
# ROOT/opt/edge-recorder names /opt/edge-recorder, so it works once ROOT is the root. This
# only fits a target with the same Python minor version and CPU architecture as PYTHON (the
# script checks when the target has a python3 already). For another architecture (a Pi image
# built on x86-64), run this script inside the target instead, with --root / (pi-gen:
# on_chroot; mmdebstrap: chroot), so the venv is made by the target's own python3.
# As a user other than root (only sensible with --root), files keep that user as owner and
# systemd-sysusers/systemd-tmpfiles are skipped; systemd applies both at the first boot.
set -euo pipefail
umask 022

prefix=/opt/edge-recorder
units=(edge-recorder.service edge-recorder-provision.service)

usage() {
  echo "usage:" >&2
  sed -n '5,7p' "$0" | sed 's/^#//' >&2
  exit 64
}
die() { # MESSAGE [EXIT STATUS, default 1]
  echo "install.sh: error: $1" >&2
  exit "${2:-1}"
}
say() { echo "install.sh: $*" >&2; }

root=/ wheel="" source_dir="" wheelhouse="" no_index=0 python=python3
while [ $# -gt 0 ]; do
  case "$1" in
    --root | --wheel | --from-source | --wheelhouse | --python)
      if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value" 64; fi
      case "$1" in
        --root) root=$2 ;;
        --wheel) wheel=$2 ;;
        --from-source) source_dir=$2 ;;
        --wheelhouse) wheelhouse=$2 ;;
        --python) python=$2 ;;
      esac
      shift 2
      ;;
    --no-index) no_index=1; shift ;;
    -h | --help) usage ;;
    *) echo "install.sh: error: unknown argument: $1" >&2; usage ;;
  esac
done

# -- checks -----------------------------------------------------------------------------------
if { [ -n "$wheel" ] && [ -n "$source_dir" ]; } || { [ -z "$wheel" ] && [ -z "$source_dir" ]; }; then
  echo "install.sh: error: give exactly one of --wheel FILE and --from-source DIR" >&2
  usage
fi
[ -z "$wheel" ] || [ -f "$wheel" ] || die "no such wheel: $wheel" 66
[ -z "$source_dir" ] || [ -f "$source_dir/pyproject.toml" ] || die "$source_dir has no pyproject.toml" 66
[ -z "$wheelhouse" ] || [ -d "$wheelhouse" ] || die "no such wheelhouse: $wheelhouse" 66
[ "$no_index" = 0 ] || [ -n "$wheelhouse" ] || die "--no-index needs --wheelhouse DIR" 64
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
root=$(cd "$root" && pwd -P)
r=${root%/} # "" for /: every path on the box is "$r/path"
venv=$r$prefix
as_root=0
[ "$(id -u)" -ne 0 ] || as_root=1

# A staged venv only runs on the same Python minor version and architecture.
elf_machine() { od -An -tx1 -j18 -N2 "$1" | tr -d ' \n'; }
if [ -n "$r" ]; then
  host_version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  host_python=$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')
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

# -- 1. the virtual environment -------------------------------------------------------------
if [ -n "$r" ] && [ -d "$venv/bin" ]; then
  # An earlier staged install left the links pointing at the target's python3; point them
  # back at $python (venv keeps an existing link) for pip to run now.
  find "$venv/bin" -maxdepth 1 -name 'python*' -type l -delete
fi
say "virtual environment $venv"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input --no-cache-dir)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
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
  "${pip[@]}" wheel --quiet --no-deps "${pip_index[@]}" --wheel-dir "$work" "$work/source"
  wheel=$(find "$work" -maxdepth 1 -name 'edge_recorder-*.whl' | head -n 1)
  [ -n "$wheel" ] || die "pip built no edge_recorder wheel from $source_dir"
fi
say "installing $(basename "$wheel") and its dependencies"
# The wheel itself is always reinstalled (a rebuilt wheel may keep its version number); its
# dependencies only when missing or too old.
"${pip[@]}" install --quiet --no-warn-script-location "${pip_index[@]}" --no-deps --force-reinstall "$wheel"
"${pip[@]}" install --quiet --no-warn-script-location "${pip_index[@]}" "$wheel"
edge_recorder=("$venv/bin/python" -m firmware.cli.main)
version=$("${edge_recorder[@]}" --version)

# The command on PATH, for `sudo edge-recorder provision` and the like (sudo's secure_path has
# /usr/local/bin). The link names the venv's script where it is on the box.
command_link=$r/usr/local/bin/edge-recorder
if [ "$(readlink "$command_link")" = "$prefix/bin/edge-recorder" ]; then
  : # ours, from an earlier install
elif [ -e "$command_link" ] || [ -L "$command_link" ]; then
  say "note: $command_link is not a link to $prefix/bin/edge-recorder: left as it is; run $prefix/bin/edge-recorder by its full path"
else
  install -d -m 0755 "$r/usr/local/bin"
  ln -s "$prefix/bin/edge-recorder" "$command_link"
fi

# -- 2. units, users, directories -----------------------------------------------------------
for unit in "${units[@]}"; do
  install -D -m 0644 "$systemd_dir/$unit" "$r/usr/lib/systemd/system/$unit"
done
install -D -m 0644 "$systemd_dir/edge-recorder.sysusers" "$r/usr/lib/sysusers.d/edge-recorder.conf"
install -D -m 0644 "$systemd_dir/edge-recorder.tmpfiles" "$r/usr/lib/tmpfiles.d/edge-recorder.conf"
if [ "$as_root" = 1 ]; then
  install -d -m 0755 "$r/etc" # an empty root: sysusers writes /etc/passwd, /etc/group
  systemd-sysusers --root="$root" edge-recorder.conf
else
  say "not root: user and group edge-recorder are made by systemd-sysusers at the first boot"
fi

# -- 3. the default config ------------------------------------------------------------------
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

# -- 4. enable ------------------------------------------------------------------------------
systemctl --root="$root" enable "${units[@]}"

# -- a staged venv moves to /opt/edge-recorder ------------------------------------------------
if [ -n "$r" ]; then
  # Whichever of python, python3, python3.X venv linked to $python (the others link to it).
  for link in "$venv"/bin/python*; do
    if [ -L "$link" ] && [[ $(readlink "$link") == /* ]]; then
      ln -sfn /usr/bin/python3 "$link"
    fi
  done
  sed -i -e 's|^home = .*|home = /usr/bin|' \
    -e "s|^executable = .*|executable = /usr/bin/python$host_version|" \
    -e "s|^command = .*|command = /usr/bin/python3 -m venv $prefix|" "$venv/pyvenv.cfg"
  staged=$(printf '%s' "$venv" | sed -e 's/[]\/$*.^|[]/\\&/g')
  { grep -rlIF -- "$venv" "$venv/bin" || true; } | while IFS= read -r file; do
    sed -i "s|$staged|$prefix|g" "$file"
  done
elif [ -d /run/systemd/system ] && ! systemd-detect-virt --quiet --chroot; then
  systemctl daemon-reload
  say "start it with: systemctl start edge-recorder (restart it after an upgrade)"
fi
say "$version installed in $root"
