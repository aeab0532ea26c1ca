#!/usr/bin/env bash
# README command two: build everything, run the C/C++ test suite (CPU tests always run; GPU
# tests skip without a device), then the Python package's tests against the built library.
# FNGD_SKIP_PYTHON=1 skips the Python part (it installs a CPU torch into a venv, ~1 min once).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)"
if [ "${FNGD_SKIP_PYTHON:-0}" != "1" ]; then
  # python_setup.sh reports its progress on stderr (shown); stdout is the venv's python path.
  py=$(bash scripts/python_setup.sh | tail -n1)
  FNGD_LIBRARY="$PWD/build/libfngd.so" "$py" -m pytest python/tests -q
fi
