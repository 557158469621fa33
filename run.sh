#!/usr/bin/env bash
# Set up what is missing (Debian packages, a virtual environment) and run:
#   ./run.sh demo [ARGS]   record a synthetic demo call with the recording core
#   ./run.sh test [ARGS]   run the test suite (ARGS go to pytest)
#   ./run.sh bench         run the benchmarks
#   ./run.sh smoke [ARGS]  boot the install artifact in an emulated arm64 box (images/smoke.sh, as root, ~10 min)
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(python3 python3-venv python3-dev gcc libasound2-dev libsndfile1 espeak-ng alsa-utils systemd mosquitto shellcheck mmdebstrap libcap2-bin ffmpeg minisign mender-client mender-artifact)
if [ "${1:-}" = smoke ]; then
  PACKAGES+=(qemu-user-static binfmt-support arch-test qemu-system-arm e2fsprogs dosfstools mtools)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "run.sh: installing ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
  # mender-client enables and starts its daemon: the tests run mender standalone, with a data folder of their own.
  if [[ " ${missing[*]} " == *" mender-client "* ]] && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now mender-client.service >&2 || true
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "run.sh: preparing .venv" >&2
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip >&2
  .venv/bin/pip install -q -e '.[test]' >&2
  touch .venv/.installed
fi

cmd=${1:-}
shift || true
case "$cmd" in
  demo) exec .venv/bin/edge-recorder demo "$@" ;;
  test) exec .venv/bin/python -m pytest "$@" ;;
  bench) exec .venv/bin/python -m bench "$@" ;;
  smoke)
    if [ "$(id -u)" -ne 0 ]; then exec sudo images/smoke.sh "$@"; fi
    exec images/smoke.sh "$@" ;;
  *) echo "usage: ./run.sh demo|test|bench|smoke [ARGS]" >&2; exit 64 ;;
esac
