#!/usr/bin/env bash
# The test command of README.md: installs packages, builds, runs every CTest test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
cd build
ctest --output-on-failure -j "$(nproc)" --timeout 600
