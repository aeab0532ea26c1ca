#!/usr/bin/env bash
# README command two: build everything, then run the whole test suite (CPU tests always run;
# GPU tests skip without a device).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)"
