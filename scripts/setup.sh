#!/usr/bin/env bash
# Installs every system package the build and the tests need. Idempotent and non-interactive.
set -euo pipefail

pkgs=(build-essential cmake pkg-config git python3 python3-venv
      libopenmpi-dev openmpi-bin libyaml-cpp-dev libboost-dev nlohmann-json3-dev
      libspdlog-dev libfmt-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev libpcre2-dev zlib1g-dev
      curl)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all system packages present"
fi
