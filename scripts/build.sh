#!/usr/bin/env bash
# Configure and build libfngd, its tests, examples and benchmarks into ./build.
# The CUDA backend is built when nvcc is found (on PATH or in /usr/local/cuda/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${FNGD_CMAKE_ARGS:-}
cmake --build build -j"$(nproc)"
