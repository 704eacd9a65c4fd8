#!/usr/bin/env bash
# The test command of README.md: installs packages, builds, runs every CTest test, then the sanitizer
# and fuzz jobs (scripts/sanitize.sh: clang AddressSanitizer + UndefinedBehaviorSanitizer build of
# the unit and in-process suites, each fuzzer over its committed corpus, ThreadSanitizer build of
# the threaded suites). PHI_SKIP_SANITIZE=1 stops after CTest (quicker local runs; CI runs all).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
(cd build && ctest --output-on-failure -j "$(nproc)" --timeout 600)
if [ "${PHI_SKIP_SANITIZE:-0}" = 1 ]; then
    echo "test: PHI_SKIP_SANITIZE=1: the sanitizer and fuzz jobs were skipped"
    exit 0
fi
./scripts/sanitize.sh
