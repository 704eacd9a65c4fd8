#!/usr/bin/env bash
# Installs every system package the build and the tests need. Idempotent and non-interactive.
set -euo pipefail

pkgs=(build-essential cmake pkg-config git python3 python3-venv
      libopenmpi-dev openmpi-bin libyaml-cpp-dev libboost-dev nlohmann-json3-dev
      libspdlog-dev libfmt-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev libpcre2-dev zlib1g-dev libssl-dev
      curl
      clang libclang-rt-14-dev llvm libomp-14-dev)  # the sanitizer and fuzz jobs (scripts/sanitize.sh)

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

# The official openai client for the end-to-end test, in a virtual environment (system Python may
# refuse global installs). Pinned for reproducibility.
venv="$(cd "$(dirname "$0")/.." && pwd)/.venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
  echo "setup: installing the openai client into $venv"
  python3 -m venv "$venv"
  for attempt in 1 2 3; do
    "$venv/bin/pip" install -q -r "$(dirname "$0")/requirements-e2e.txt" && break
    sleep 5
  done
  "$venv/bin/python" -c "import openai" || { echo "setup: could not install the openai package" >&2; exit 1; }
fi
