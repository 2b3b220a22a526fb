#!/usr/bin/env bash
# Installs every Debian package meshpipe needs to build, test and demo. Idempotent: when all
# packages are present it does nothing (no apt-get update, no network).
set -euo pipefail

core_pkgs=(
  build-essential cmake pkg-config
  libcaf-dev libucx-dev ucx-utils libglpk-dev glpk-utils libfmt-dev catch2
  libopenblas-dev libgloo-dev libspdlog-dev nlohmann-json3-dev libcli11-dev libssl-dev
)
oracle_pkgs=(python3-torch python3-numpy)

want=("${core_pkgs[@]}")
if [[ "${MESHPIPE_SKIP_ORACLE_DEPS:-0}" != "1" ]]; then
  want+=("${oracle_pkgs[@]}")
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#want[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} package(s): ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: done"
