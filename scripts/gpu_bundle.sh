#!/usr/bin/env bash
# Build libfngd's CUDA binaries on this (CPU) machine and bundle them with the runtime
# libraries a GPU node may lack, for scripts/gpu_check.sh --bundle:
#
#   scripts/gpu_bundle.sh OUTDIR        # -> OUTDIR/fngd-gpu-bundle/ and OUTDIR/fngd-gpu-bundle.tar.xz
#
# Built: libfngd.so, the CUDA test binary (GoogleTest linked statically) and the CUDA kernel
# benchmark, for sm_80 and sm_90 SASS (A100, H100/H200; override with
# FNGD_BUNDLE_ARCHS="90-real"), Release with -lineinfo (sanitizer reports name source lines).
# Bundled from ldd: OpenBLAS, LAPACK/LAPACKE, gfortran, quadmath and any other non-system
# library the binaries need, except the NVIDIA ones (CUDA runtime, cuBLAS, cuSOLVER, cuDNN,
# nvJitLink, cuSPARSE), which come with the GPU node's driver, CUDA toolkit or the pip wheels
# beside torch (gpu_check.sh finds those). About 10 MB as .tar.xz.
# Environment: FNGD_BUNDLE_BUILD_DIR (default OUTDIR/build), FNGD_BUNDLE_JOBS (default 2).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:?usage: scripts/gpu_bundle.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BUILD=${FNGD_BUNDLE_BUILD_DIR:-$OUT/build}
ARCHS=${FNGD_BUNDLE_ARCHS:-80-real;90-real}
JOBS=${FNGD_BUNDLE_JOBS:-2}
NAME=fngd-gpu-bundle
B=$OUT/$NAME
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
command -v nvcc >/dev/null 2>&1 || { echo "gpu_bundle: nvcc not found" >&2; exit 1; }

cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DFNGD_ENABLE_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$ARCHS" -DFNGD_CUDA_LINEINFO=ON -DFNGD_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$BUILD" -j"$JOBS" --target fngd fngd_cuda_tests fngd_bench_cuda_kernels

rm -rf "$B" "$OUT/$NAME.tar.xz"
mkdir -p "$B/bin" "$B/lib"
cp "$BUILD/tests/fngd_cuda_tests" "$BUILD/bench/fngd_bench_cuda_kernels" "$B/bin/"
cp -P "$BUILD"/libfngd.so* "$B/lib/"

# Runtime libraries: everything ldd resolves outside the C runtime and the NVIDIA stack.
skip='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|librt\.|libpthread\.|libgcc_s\.|libstdc\+\+\.|libcuda\.|libcudart|libcublas|libcublasLt|libcusolver|libcusparse|libcudnn|libnvJitLink|libnvrtc|libnccl)'
for f in "$B/bin/"* "$B/lib/libfngd.so"; do
  ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r soname path; do
  if echo "$soname" | grep -qE "$skip"; then continue; fi
  cp -L "$path" "$B/lib/$soname"
done
strip --strip-unneeded "$B/lib/"*.so.* 2>/dev/null || true

{
  echo "libfngd GPU bundle (scripts/gpu_bundle.sh); run: scripts/gpu_check.sh --bundle <this folder or tarball> OUTDIR"
  echo "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "built: $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -m), nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), CUDA architectures $ARCHS, -lineinfo"
  echo "cmake cache: $(grep -E '^FNGD_(WITH_CUDNN|CUDNN_LIBRARY|CUDA_LINEINFO):' "$BUILD/CMakeCache.txt" | tr '\n' ' ')"
  echo
  echo "files:"
  (cd "$B" && find bin lib -type f -printf '  %p %s bytes\n' | sort)
  echo
  echo "needed from the GPU node (not bundled):"
  for f in "$B/bin/"* "$B/lib/libfngd.so"; do ldd "$f"; done | awk '{print $1}' | sort -u |
    grep -E '^(libcuda|libcudart|libcublas|libcusolver|libcusparse|libcudnn|libnvJitLink)' | sed 's/^/  /'
} >"$B/MANIFEST.txt"

tar -C "$OUT" -cJf "$OUT/$NAME.tar.xz" "$NAME"
echo "gpu_bundle: $B ($(du -sh "$B" | cut -f1)), $OUT/$NAME.tar.xz ($(du -h "$OUT/$NAME.tar.xz" | cut -f1))"
