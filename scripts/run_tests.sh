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
# GPU check mechanics without a GPU: finds the CUDA binaries, every GPU step "skipped: no GPU".
timeout 60 bash scripts/gpu_check.sh --dry-run build/gpu-check-dry-run >build/gpu-check-dry-run.log 2>&1 || { cat build/gpu-check-dry-run.log; exit 1; }
